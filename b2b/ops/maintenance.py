"""The maintenance tasks (F18): Clear Conflicts, Clear Cached Data, Delete Files.

Airflow-free; the ``b2b maintenance …`` commands and the maintenance DAGs call these.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from b2b.blocks import BLOCKS, CONFLICT_FIELDS, same_sql, text_sql
from b2b.config.settings import RETENTION_FIELDS, Settings
from b2b.context import scalar

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)


def clear_conflicts(conn: Connection, by: str = "maintenance") -> int:
    """Clear Conflicts: drop open conflicts where the LA's data now equals the incoming data."""
    with conn.transaction():
        checks = " OR ".join(f"(c.field = '{f}' AND {same_sql(f, text_sql(f, f'ch.{f}'), 'c.incoming_value')})"
                             for f in CONFLICT_FIELDS)
        n = conn.execute(
            f"""INSERT INTO results.conflict_resolution (person_id, field, la_value, incoming_value, resolution,
                                                       resolved_by)
                SELECT c.person_id, c.field, c.la_value, c.incoming_value, 'cleared', %s
                  FROM results.conflict c JOIN core.child ch ON ch.person_id = c.person_id
                 WHERE {checks}
                ON CONFLICT DO NOTHING""", (by,)).rowcount
    log.info("clear conflicts: %d cleared", n)
    return n


def clear_cached_data(conn: Connection, base_id: str | None = None) -> int:
    """Clear Cached Data: flush the hash cache (all bases, or one), so the next import
    processes every block again."""
    with conn.transaction():
        n = conn.execute("DELETE FROM ops.hash_cache WHERE %(b)s::text IS NULL OR base_id = %(b)s",
                         {"b": base_id}).rowcount
    log.info("clear cached data: %d cache entries removed%s", n, f" for base {base_id}" if base_id else "")
    return n


def delete_files(conn: Connection, older_than_days: int, now: datetime | None = None) -> int:
    """Delete Files: purge the stored message payloads older than the retention. The parsed
    blocks and everything derived from them stay (tables do not change)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    with conn.transaction():
        n = conn.execute("""UPDATE raw.inbound_file SET payload = NULL
                             WHERE payload IS NOT NULL AND received_at < %s""", (cutoff,)).rowcount
    log.info("delete files: %d payload(s) older than %d days purged", n, older_than_days)
    return n


#: block types whose staging rows a newer window replaces (attainment results accumulate: kept)
_SUPERSEDED_STAGING = tuple(b for b in BLOCKS if b.name != "attainment")


def _older_than(path: Path, cutoff: datetime) -> bool:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC) < cutoff


def _delete_old_files(folders: Any, cutoff: datetime, pattern: str = "*") -> int:
    n = 0
    for folder in folders:
        for path in folder.glob(pattern):
            if path.is_file() and _older_than(path, cutoff):
                path.unlink()
                n += 1
    return n


def enforce_retention(conn: Connection, settings: Settings, *, now: datetime | None = None, home: Path | None = None) -> dict:
    """Delete Files (F18) with the LA's retention per kind of data (F44; docs/data-protection.md):

    * ``file_retention_days``: stored message payloads (``raw.inbound_file.payload``) and the
      copies of manually imported / LA files in the inbound ``done/`` folders;
    * ``block_retention_days``: parsed blocks' content (``raw.inbound_block.content``) once a
      newer block of the same student and type was taken in (the latest is what contacts and
      the hash filter build on, so it stays);
    * ``staging_retention_days``: staging rows of superseded windows (a newer window has the
      student's rows; attainment results accumulate and stay);
    * ``outbound_retention_days``: messages sent back to schools (``raw.outbound_file.payload``);
    * ``suspense_retention_days``: suspense files once resolved (a later file of the same base
      and task was taken in), and files left in the inbound ``suspense/`` folders;
    * ``report_retention_days``: validation reports (HTML) and anomalies' offending values, and
      GX's remembered verdicts (``ops.gx_verdict``, digests of the values) unused for as long
      (at most the cache's 35 days);
    * school reports (``results.school_report``: the Word and Excel files, the rows' values and
      the school's uploads) after ``b2b.outbound.reports.RETENTION_DAYS`` (30), as the weekly
      report DAG does (decisions stay).

    The noted changes of ``core.child`` (one row per writing transaction, kept only to name
    the state the cached name-frequency totals belong to) are pruned: they hold no personal
    data, but grew with every core load and officer decision.

    Row counts, decisions, matches, conflicts and the LA's records (core, results) stay. One
    transaction for the database; the run is recorded in ``ops.retention_run``."""
    from b2b.db import b2b_home
    from b2b.ingest.validation import VERDICT_KEEP_DAYS
    from b2b.outbound import reports

    now = now or datetime.now(UTC)
    home = home or b2b_home()

    def cutoff(name: str) -> datetime:
        return now - timedelta(days=int(getattr(settings, name)))

    counts: dict[str, int] = {}
    with conn.transaction():
        counts["payloads"] = conn.execute(
            """UPDATE raw.inbound_file SET payload = NULL, purged_at = %s
                WHERE payload IS NOT NULL AND received_at < %s""", (now, cutoff("file_retention_days"))).rowcount
        counts["suspense_payloads"] = conn.execute(
            """UPDATE raw.inbound_file s SET payload = NULL, purged_at = %s
                WHERE s.status = 'suspense' AND s.payload IS NOT NULL AND s.received_at < %s
                  AND EXISTS (SELECT 1 FROM raw.inbound_file n
                               WHERE n.base_id = s.base_id AND n.task_key = s.task_key
                                 AND n.window_order > s.window_order AND n.status IN ('parsed', 'loaded'))""",
            (now, cutoff("suspense_retention_days"))).rowcount
        counts["blocks"] = scalar(conn,
            """WITH purged AS (
                   UPDATE raw.inbound_block b SET content = '{}'::jsonb
                     FROM raw.inbound_file f
                    WHERE f.file_id = b.file_id AND f.received_at < %s AND b.content <> '{}'::jsonb
                      AND EXISTS (SELECT 1 FROM raw.inbound_block n JOIN raw.inbound_file nf ON nf.file_id = n.file_id
                                   WHERE n.base_id = b.base_id AND n.student_guid = b.student_guid
                                     AND n.block_type = b.block_type AND nf.window_order > f.window_order
                                     AND nf.status IN ('parsed', 'loaded') AND n.disposition IN ('loaded', 'skipped'))
                   RETURNING b.file_id),
               marked AS (UPDATE raw.inbound_file f SET blocks_purged_at = %s
                           WHERE f.file_id IN (SELECT file_id FROM purged))
               SELECT count(*) FROM purged""", (cutoff("block_retention_days"), now))
        staging = 0
        for block in _SUPERSEDED_STAGING:
            staging += conn.execute(
                f"""DELETE FROM staging.{block.staging} s USING raw.inbound_file f
                     WHERE f.file_id = s.file_id AND f.received_at < %s
                       AND EXISTS (SELECT 1 FROM staging.{block.staging} n
                                     JOIN raw.inbound_file nf ON nf.file_id = n.file_id
                                    WHERE n.base_id = s.base_id AND n.student_guid = s.student_guid
                                      AND nf.window_order > f.window_order)""",
                (cutoff("staging_retention_days"),)).rowcount
        counts["staging_rows"] = staging
        counts["outbound_payloads"] = conn.execute(
            """UPDATE raw.outbound_file SET payload = NULL, purged_at = %s
                WHERE payload IS NOT NULL AND sent_at < %s""", (now, cutoff("outbound_retention_days"))).rowcount
        counts["anomaly_values"] = conn.execute(
            "UPDATE results.anomaly SET value = NULL WHERE value IS NOT NULL AND detected_at < %s",
            (cutoff("report_retention_days"),)).rowcount
        # school reports (Word and spreadsheet with names, DOB, addresses; the school's upload and
        # each row's two values go with them): the weekly report DAG purges them too, but only
        # while it runs; here they go whatever the reports' schedule (decisions stay)
        counts["school_reports"] = reports.purge(conn, reports.RETENTION_DAYS, now=now)
        # GX's remembered verdicts: an unsalted digest of each value judged (UPN, DOB, postcode…),
        # which a dictionary of the few possible values reverses; validate prunes them only when
        # it stores new ones, so a quiet system kept them for ever. Unused for the shorter of the
        # cache's own 35 days and the anomaly values' retention: gone (a cache: any row may go).
        verdict_days = min(VERDICT_KEEP_DAYS, int(settings.report_retention_days))
        counts["gx_verdicts"] = conn.execute("DELETE FROM ops.gx_verdict WHERE seen < %s::date",
                                             (now - timedelta(days=verdict_days),)).rowcount
        counts["child_change_rows"] = scalar(conn, "SELECT core.prune_child_change()")
        inbound = home / "inbound"
        counts["reports"] = _delete_old_files([home / "reports" / "validation"], cutoff("report_retention_days"))
        counts["done_files"] = _delete_old_files(
            [*inbound.glob("*/done"), *inbound.glob("*/*/done")], cutoff("file_retention_days"))
        counts["suspense_files"] = _delete_old_files(
            [*inbound.glob("*/suspense"), *inbound.glob("*/*/suspense")], cutoff("suspense_retention_days"))
        conn.execute("INSERT INTO ops.retention_run (as_of, settings, counts) VALUES (%s, %s, %s)",
                     (now, json.dumps({f: getattr(settings, f) for f in RETENTION_FIELDS}), json.dumps(counts)))
    log.info("delete files (retention): %s", counts)
    return counts
