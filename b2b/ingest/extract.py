"""Extract stage, free of Airflow: store what a school sent, parse it into blocks, log it.

``store_messages`` takes the messages a hook received for one DAG run window and, in
ONE transaction:

1. deletes what an earlier attempt at the same (DAG, window) stored — a rerun or a
   backfill of the same window replaces, never doubles;
2. stores each message as a ``raw.inbound_file`` row (payload kept until Delete Files);
3. parses it (XML streaming / JSON page) and COPYs its blocks into ``raw.inbound_block``;
   a message that fails to parse is kept with ``status='suspense'`` and the reason, and
   none of its blocks are written (never half-parsed);
4. writes task-log rows (F9): one per file and one run summary, with counts only.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from b2b.context import RunContext, log_stage_file
from b2b.ingest.messages import MessageError, ParsedMessage, parse_primary_page, parse_sims7

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedMessage:
    label: str  # "export", "sen p2/3"
    content: bytes
    content_type: str  # application/xml | application/json
    group: str | None = None  # SIMS Primary data group


@dataclass
class ExtractSummary:
    files: int = 0
    failed: int = 0
    pupils: int = 0
    blocks: int = 0
    bytes: int = 0
    blocks_by_type: dict = field(default_factory=dict)
    file_ids: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # (file_id, label, reason)

    def counts(self) -> dict:
        return {
            "files": self.files, "failed": self.failed, "pupils": self.pupils,
            "blocks": self.blocks, "bytes": self.bytes, "blocks_by_type": self.blocks_by_type,
        }


#: F19: an attainment message over 2 MB is refused (kept in suspense, never half-loaded)
ATTAINMENT_MAX_BYTES = 2 * 1024 * 1024


def parse_message(ctx: RunContext, msg: ReceivedMessage, *, validate: bool = True) -> ParsedMessage:
    if ctx.data_filter == "attainment" and len(msg.content) > ATTAINMENT_MAX_BYTES:
        raise MessageError(f"attainment message of {len(msg.content):,} bytes is over the 2 MB limit (F19); "
                           "split the task's aspect hierarchies or NCYs")
    if ctx.source == "sims7":
        return parse_sims7(msg.content, expected_base=ctx.base_id, validate=validate)
    return parse_primary_page(msg.content, expected_group=msg.group)


def _forget_previous(conn, ctx: RunContext) -> int:
    """Remove an earlier attempt at this window (files cascade to blocks and file logs)."""
    conn.execute(
        """DELETE FROM ops.task_log WHERE dag_id = %s AND window_end = %s
           AND window_start IS NOT DISTINCT FROM %s AND stage = 'extract'""",
        (ctx.dag_id, ctx.window_end, ctx.window_start),
    )
    cur = conn.execute(
        """DELETE FROM raw.inbound_file WHERE dag_id = %s AND window_end = %s
           AND window_start IS NOT DISTINCT FROM %s""",
        (ctx.dag_id, ctx.window_end, ctx.window_start),
    )
    return cur.rowcount


def _copy_blocks(conn, file_id: int, base_id: str, parsed: ParsedMessage) -> None:
    with conn.cursor() as cur:
        with cur.copy(
            "COPY raw.inbound_block (file_id, ordinal, base_id, block_type, student_guid, content) FROM STDIN"
        ) as copy:
            for i, b in enumerate(parsed.blocks, start=1):
                copy.write_row((file_id, i, base_id, b.block_type, b.student_guid,
                                json.dumps(b.content, separators=(",", ":"), sort_keys=True)))


def store_messages(conn, ctx: RunContext, messages: Iterable[ReceivedMessage], *,
                   validate: bool = True) -> ExtractSummary:
    """Store, parse and log every message of one run window, atomically. See module doc.

    ``validate=False`` skips XSD validation of SIMS 7 XML (well-formedness and the
    hardening still apply); only tests of hand-written fragments use it.
    """
    summary = ExtractSummary()
    with conn.transaction():
        replaced = _forget_previous(conn, ctx)
        if replaced:
            log.info("replacing %d file(s) from an earlier attempt at this window", replaced)
        for seq, msg in enumerate(messages, start=1):
            digest = hashlib.sha256(msg.content).hexdigest()
            file_id = conn.execute(
                """INSERT INTO raw.inbound_file (base_id, task_key, dag_id, run_id, window_start,
                       window_end, window_order, seq, source, data_filter, label, content_type, payload,
                       size_bytes, sha256)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   RETURNING file_id""",
                (ctx.base_id, ctx.task_key, ctx.dag_id, ctx.run_id, ctx.window_start, ctx.window_end,
                 ctx.window_order, seq, ctx.source, ctx.data_filter, msg.label, msg.content_type, msg.content,
                 len(msg.content), digest),
            ).fetchone()[0]
            summary.files += 1
            summary.bytes += len(msg.content)
            summary.file_ids.append(file_id)
            try:
                parsed = parse_message(ctx, msg, validate=validate)
            except MessageError as exc:
                summary.failed += 1
                summary.errors.append((file_id, msg.label, str(exc)))
                conn.execute(
                    "UPDATE raw.inbound_file SET status = 'suspense', error = %s WHERE file_id = %s",
                    (str(exc), file_id),
                )
                log_stage_file(conn, ctx, "extract", file_id, {"bytes": len(msg.content)},
                               f"{msg.label}: put in suspense: {exc}", "error", replace=False)
                log.error("base %s file %s (%s) put in suspense: %s", ctx.base_id, file_id, msg.label, exc)
                continue
            _copy_blocks(conn, file_id, ctx.base_id, parsed)
            by_type: dict[str, int] = {}
            for b in parsed.blocks:
                by_type[b.block_type] = by_type.get(b.block_type, 0) + 1
                summary.blocks_by_type[b.block_type] = summary.blocks_by_type.get(b.block_type, 0) + 1
            conn.execute(
                "UPDATE raw.inbound_file SET status = 'parsed', pupils = %s, blocks = %s WHERE file_id = %s",
                (parsed.pupils, len(parsed.blocks), file_id),
            )
            summary.pupils += parsed.pupils
            summary.blocks += len(parsed.blocks)
            log_stage_file(conn, ctx, "extract", file_id,
                           {"pupils": parsed.pupils, "blocks": len(parsed.blocks), "bytes": len(msg.content),
                            "blocks_by_type": by_type},
                           f"{msg.label}: {parsed.pupils} pupils, {len(parsed.blocks)} blocks", replace=False)
        level = "error" if summary.failed else "info"
        log_stage_file(conn, ctx, "extract", None, summary.counts(),
                       (f"extract: {summary.files} file(s), {summary.failed} failed, "
                        f"{summary.pupils} pupils, {summary.blocks} blocks"), level, replace=False)
    return summary
