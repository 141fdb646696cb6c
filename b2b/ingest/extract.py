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

Pupils it must not process are kept out by rule (issue 9; ``docs/reliability-input.md``):

* **the same pupil twice** — twice in one SIMS 7 message, or twice in one SIMS Primary data
  group of the run (same ``studentId`` on one page or on two pages): *neither* copy is
  processed, because nothing says which one is right; each copy becomes an error anomaly
  ``duplicate_pupil`` naming its file and position (and the other copy's);
* **a pupil that fails the schema or a type** in a structurally sound SIMS 7 message (an
  invalid DOB, an over-long name), or whose SIMS Primary data PostgreSQL cannot store or
  load (NUL or an unpaired surrogate in text, NaN/Infinity, a list where one value is
  expected: ``messages.parse_primary_page``): that pupil is left out and becomes an error
  anomaly ``pupil_schema`` naming its position, element (or key) and line; the other
  pupils go on.

Both are recorded in ``raw.rejected_block``; the validate stage marks those blocks invalid
and reports them (:func:`reject_flagged`).

If the school cannot be read at all (connection, authentication, HTTP, deadline or cap
errors), the transaction rolls back and one ``ops.task_log`` row naming the base and the
error is written *outside* it (F9), then the error is raised.
"""
from __future__ import annotations

import codecs
import gc
import hashlib
import json
import logging
import queue
import sys
import threading
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from b2b import gc_control
from b2b.context import RunContext, log_stage_file, scalar
from b2b.errors import B2BError, IngestError
from b2b.ingest import messages as parsers
from b2b.ingest.messages import (
    Block,
    MessageError,
    ParsedMessage,
    RejectedPupil,
    parse_primary_page,
    parse_sims7,
)

if TYPE_CHECKING:
    from psycopg import Connection

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
    rejected_pupils: int = 0   # pupils failing the schema or a type (not processed)
    duplicate_pupils: int = 0  # copies of a pupil sent twice (neither processed)

    def counts(self) -> dict:
        return {
            "files": self.files, "failed": self.failed, "pupils": self.pupils,
            "blocks": self.blocks, "bytes": self.bytes, "blocks_by_type": self.blocks_by_type,
            "rejected_pupils": self.rejected_pupils, "duplicate_pupils": self.duplicate_pupils,
        }


@dataclass
class _Copy:
    """One copy of a pupil in a message: where it is and which blocks it became."""

    file_id: int
    label: str
    pupil: int
    ordinals: list[int] = field(default_factory=list)

    def where(self) -> str:
        return f"pupil #{self.pupil} of file {self.file_id} ({self.label})"


#: F19: an attainment message over 2 MB is refused (kept in suspense, never half-loaded)
ATTAINMENT_MAX_BYTES = 2 * 1024 * 1024


def parse_message(ctx: RunContext, msg: ReceivedMessage, *, validate: bool = True) -> ParsedMessage:
    if ctx.data_filter == "attainment" and len(msg.content) > ATTAINMENT_MAX_BYTES:
        raise MessageError(f"attainment message of {len(msg.content):,} bytes is over the 2 MB limit (F19); "
                           "split the task's aspect hierarchies or NCYs")
    if ctx.source == "sims7":
        return parse_sims7(msg.content, expected_base=ctx.base_id, validate=validate)
    return parse_primary_page(msg.content, expected_group=msg.group)


def _forget_previous(conn: Connection, ctx: RunContext) -> int:
    """Remove an earlier attempt at this window (files cascade to blocks and file logs).

    The rows recording a failure to read the school (F9) stay: they are the history."""
    conn.execute(
        """DELETE FROM ops.task_log WHERE dag_id = %s AND window_end = %s
           AND window_start IS NOT DISTINCT FROM %s AND stage = 'extract' AND NOT counts ? 'source_error'""",
        (ctx.dag_id, ctx.window_end, ctx.window_start),
    )
    cur = conn.execute(
        """DELETE FROM raw.inbound_file WHERE dag_id = %s AND window_end = %s
           AND window_start IS NOT DISTINCT FROM %s""",
        (ctx.dag_id, ctx.window_end, ctx.window_start),
    )
    return cur.rowcount


BACKSLASH = "\\"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """A value for COPY's text format (backslash, tab, newline, carriage return escaped)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _json_text(source: str | None, nonfinite: bool = False) -> Any:
    """The function writing a block's content as JSON for COPY (issue 15). The stored value is
    ``jsonb``: key order, spacing and ``\\u`` escapes do not reach it, nor the block hash
    computed from it.

    msgspec writes JSON 4-7x faster than ``json.dumps``. SIMS 7 blocks hold only str, bool, int,
    None, lists and dicts (``messages._convert``). SIMS Primary content is the school's JSON as
    ``json.loads`` read it: the same kinds, plus floats. A pupil holding a non-finite one (NaN,
    Infinity, a float too big) or a lone surrogate is rejected by the parser, never written; a page
    that held one (``ParsedMessage.nonfinite``) is still written by ``json.dumps`` as before, never
    by msgspec (which would write null), and so is a block msgspec cannot write."""
    import msgspec

    encode = msgspec.json.Encoder().encode

    def dumps(content: dict) -> str:
        return json.dumps(content, separators=(",", ":"))
    if source != "sims7" and nonfinite:
        return dumps

    def write(content: dict) -> str:
        try:
            return encode(content).decode()
        except (TypeError, ValueError, OverflowError):  # (UnicodeEncodeError is a ValueError)
            return dumps(content)
    return write


def _copy_body(base_id: str, blocks: list[Block], source: str | None, encoding: str, start: int = 1,
               nonfinite: bool = False) -> bytes:
    """The COPY text of one file's blocks, every line without its leading ``file_id`` (not known
    until the file row is written: :func:`_copy_blocks` puts it in). Built where the message is
    parsed, off the connection's thread (:func:`_prepared`)."""
    # (SIMS Primary through json.dumps' ASCII-only text also when the connection's encoding is
    # not UTF-8, as before: a character it lacks is then escaped, not an encoding error)
    to_json = _json_text(source, nonfinite or (source != "sims7" and codecs.lookup(encoding).name != "utf-8"))
    base = _copy_text(base_id)
    # JSON text holds no raw tab or newline (JSON escapes them): only its backslashes need doubling;
    # so every raw newline of the body ends a line
    return "".join(f"\t{i}\t{base}\t{_copy_text(b.block_type)}\t{_copy_text(b.student_guid)}\t"
                   f"{to_json(b.content).replace(BACKSLASH, BACKSLASH * 2)}\n"
                   for i, b in enumerate(blocks, start=start)).encode(encoding)


def _copy_blocks(conn: Connection, file_id: int, body: bytes) -> None:
    """COPY the blocks of one file: its :func:`_copy_body` with ``file_id`` at the head of each
    line, as one text-format buffer (no per-row adaptation)."""
    if not body:
        return
    import psycopg

    head = str(file_id).encode("ascii")
    data = head + body[:-1].replace(b"\n", b"\n" + head) + b"\n"
    try:
        with conn.cursor() as cur, cur.copy(
                "COPY raw.inbound_block (file_id, ordinal, base_id, block_type, student_guid, content) "
                "FROM STDIN") as copy:
            copy.write(data)
    except psycopg.errors.DataError as exc:
        # the parsers keep out what PostgreSQL refuses (messages.parse_primary_page); should a value
        # still be refused, its text (which quotes the COPY line: names, DOBs) must not reach a log
        raise IngestError(f"PostgreSQL refused a block of this file ({type(exc).__name__}, SQLSTATE "
                          f"{exc.sqlstate}); nothing of the run is stored", file=file_id) from None


def _with_anchors(parsed: ParsedMessage) -> list[Block]:
    """The message's blocks, plus one empty anchor block per rejected pupil (the anomaly
    points at it; the validate stage marks it invalid, so it is never loaded)."""
    return parsed.blocks + [Block(r.block_type, r.student_guid, {}, r.pupil) for r in parsed.rejected]


def _copies(file_id: int, label: str, group: str | None, blocks: list[Block],
            seen: dict[tuple, list[_Copy]]) -> None:
    """Record each pupil copy of a stored message under its duplicate key: the pupil's id in
    a SIMS 7 message, (data group, id) in SIMS Primary (every group names each pupil once)."""
    by_pupil: dict[tuple[str, int], _Copy] = {}
    for ordinal, b in enumerate(blocks, start=1):
        key = (b.student_guid, b.pupil)
        copy = by_pupil.get(key)
        if copy is None:
            copy = by_pupil[key] = _Copy(file_id, label, b.pupil)
            seen.setdefault((group, b.student_guid), []).append(copy)
        copy.ordinals.append(ordinal)


def _rejected_rows(rejected_by_file: dict[int, tuple[int, list[RejectedPupil]]],
                   seen: dict[tuple, list[_Copy]]) -> Any:
    """``raw.rejected_block`` rows: rejected pupils' anchors and every block of duplicate copies."""
    rows: dict[tuple[int, int], tuple] = {}
    duplicates = 0
    for copies in seen.values():
        if len(copies) < 2:
            continue
        for copy in copies:
            duplicates += 1
            others = "; ".join(o.where() for o in copies if o is not copy)
            detail = f"{copy.where()}: the same pupil was also sent as {others}"[:500]
            for k, ordinal in enumerate(copy.ordinals):
                rows[(copy.file_id, ordinal)] = (copy.file_id, ordinal, "duplicate_pupil", "student_guid",
                                                 detail, k == 0)
    for file_id, (blocks, rejected) in rejected_by_file.items():
        first_anchor = blocks + 1
        for k, r in enumerate(rejected):
            rows.setdefault((file_id, first_anchor + k), (file_id, first_anchor + k, "pupil_schema", r.field,
                                                          r.detail, True))
    return sorted(rows.values()), duplicates


def reject_flagged(conn: Connection, files: list[int]) -> int:
    """For the validate stage: mark the blocks the extract stage rejected ``invalid`` and report
    them as error anomalies (``duplicate_pupil``, ``pupil_schema``). Returns the anomalies added.

    Call it after validate has cleared the files' anomalies and reset their invalid blocks."""
    conn.execute("""UPDATE raw.inbound_block b SET disposition = 'invalid' FROM raw.rejected_block r
                     WHERE r.file_id = ANY(%s) AND b.file_id = r.file_id AND b.ordinal = r.ordinal""", (files,))
    return conn.execute(
        """INSERT INTO results.anomaly (file_id, ordinal, base_id, student_guid, block_type, rule, field, value,
                                        severity)
           SELECT r.file_id, r.ordinal, b.base_id, b.student_guid, b.block_type, r.rule, r.field, r.detail, 'error'
             FROM raw.rejected_block r JOIN raw.inbound_block b USING (file_id, ordinal)
            WHERE r.file_id = ANY(%s) AND r.report
            ORDER BY r.file_id, r.ordinal""", (files,)).rowcount


def _record_failure(conn: Connection, ctx: RunContext, exc: BaseException) -> None:
    """F9: one task-log row for a run that could not read its school, written outside the
    rolled-back transaction. Names the base and the error (class, status), never a secret:
    project errors are written to be logged; anything else only by its class."""
    text = str(exc) if isinstance(exc, B2BError) else f"unexpected {type(exc).__name__}"
    counts = {"source_error": type(exc).__name__, "retryable": bool(getattr(exc, "retryable", False))}
    try:
        with conn.transaction():
            log_stage_file(conn, ctx, "extract", None, counts, f"extract failed: {type(exc).__name__}: {text}",
                           "error", replace=False)
    except Exception as log_exc:  # noqa: BLE001 - the warehouse itself may be the failure
        log.warning("base %s: could not record the extract failure in ops.task_log (%s)", ctx.base_id,
                    type(log_exc).__name__)


def store_messages(conn: Connection, ctx: RunContext, messages: Iterable[ReceivedMessage], *,
                   validate: bool = True) -> ExtractSummary:
    """Store, parse and log every message of one run window, atomically. See module doc.

    ``validate=False`` skips XSD validation of SIMS 7 XML (well-formedness and the
    hardening still apply); only tests of hand-written fragments use it.
    """
    summary = ExtractSummary()
    try:
        with gc_control.paused():  # acyclic blocks, freed as they are written: no collector walks them
            _store(conn, ctx, messages, summary, validate=validate)
    except Exception as exc:
        _record_failure(conn, ctx, exc)
        raise
    return summary


#: blocks handed to the connection's thread at a time while a SIMS 7 message is parsed. A school
#: is ~1,300 blocks: smaller chunks overlap more, each costs a COPY round trip (500 beat 250 and 1,000)
CHUNK_BLOCKS = 500


@dataclass
class _Prepared:
    """One message made ready for the database, off the connection's thread: parsed (or its
    error), its blocks with the rejected pupils' anchors, its hash and its COPY body (empty
    when its blocks were all handed on in :class:`_Chunk` s: ``streamed``)."""

    seq: int
    msg: ReceivedMessage
    parsed: ParsedMessage | None
    error: MessageError | None
    blocks: list[Block]
    sha256: str
    body: bytes
    streamed: bool = False


@dataclass
class _Start:
    """A valid-looking SIMS 7 message the worker starts parsing on the fast path: its file row
    can be written now (status ``received``, under a savepoint) while it is parsed, so that
    Postgres stores and compresses the payload while the first blocks are built. Its outcome
    is written at its end (:class:`_Prepared`); if the fast path gives up, the row is rolled
    back and written again with the careful path's outcome."""

    seq: int
    msg: ReceivedMessage
    sha256: str


@dataclass
class _Chunk:
    """Blocks of a message still being parsed (the valid-message fast path), to COPY now.
    They stand only if the message's :class:`_Prepared` says ``streamed``."""

    seq: int
    msg: ReceivedMessage
    sha256: str
    body: bytes


class _Stop(BaseException):
    """The caller stopped reading (an error writing): the worker drops what it is doing.
    (Not an Exception, so that no parser's "anything unusual" handler takes it for bad input.)"""


_END = object()


class _Worker:
    """The thread that parses the messages the caller hands it, in order, and puts chunks and
    prepared messages on a bounded queue (at most two items waiting)."""

    def __init__(self, ctx: RunContext, validate: bool, encoding: str) -> None:
        self.ctx, self.validate, self.encoding = ctx, validate, encoding
        self.inbox: queue.Queue = queue.Queue()
        self.out: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"extract-{ctx.base_id}", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                self.out.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while True:
                item = self.inbox.get()
                if item is _END or self.stop.is_set():
                    self._put(_END)
                    return
                seq, msg = item
                try:
                    prepared = self._prepare(seq, msg)
                except _Stop:
                    raise
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread, at its message
                    self._put(exc)
                    return
                self._put(prepared)
                del prepared, item, msg
        except _Stop:
            return

    def _prepare(self, seq: int, msg: ReceivedMessage) -> _Prepared:
        ctx = self.ctx
        sha = hashlib.sha256(msg.content).hexdigest()
        state = {"sent": 0, "void": False}
        fast = (ctx.source == "sims7" and self.validate
                and not (ctx.data_filter == "attainment" and len(msg.content) > ATTAINMENT_MAX_BYTES))
        started = fast and 0 < len(msg.content) <= parsers.FAST_PATH_MAX_BYTES
        if started:
            self._put(_Start(seq, msg, sha))

        def on_pupil(blocks: list[Block] | None) -> None:
            if self.stop.is_set():
                raise _Stop
            if blocks is None:
                state["void"] = True
            elif len(blocks) - state["sent"] >= CHUNK_BLOCKS:
                self._chunk(seq, msg, sha, blocks, state)

        try:
            if fast:
                parsed: ParsedMessage | None = parse_sims7(msg.content, expected_base=ctx.base_id,
                                                           validate=True, on_pupil=on_pupil)
            else:
                parsed = parse_message(ctx, msg, validate=self.validate)
            error = None
        except MessageError as exc:
            # kept as its text and place only: its traceback and the parser's error it replaced
            # hold this frame, which holds it (a cycle keeping the message alive until the
            # collector, paused for the run, runs again)
            exc.__traceback__ = exc.__context__ = exc.__cause__ = None
            parsed, error = None, exc
            # a parser stopped half-way leaves cycles (lxml's iterparse and its partial tree), which
            # the collector, paused for the run, would keep until its end: collected here, in the
            # thread that made them, before the next message (young objects only: cheap)
            gc.collect(0)
        blocks = _with_anchors(parsed) if parsed is not None else []
        if parsed is not None and (started or state["sent"]) and not state["void"] and not parsed.rejected:
            if len(blocks) > state["sent"]:
                self._chunk(seq, msg, sha, blocks, state)
            return _Prepared(seq, msg, parsed, None, blocks, sha, b"", streamed=True)
        return _Prepared(seq, msg, parsed, error, blocks, sha,
                         _copy_body(ctx.base_id, blocks, ctx.source, self.encoding,
                                    nonfinite=parsed is not None and parsed.nonfinite) if blocks else b"")

    def _chunk(self, seq: int, msg: ReceivedMessage, sha: str, blocks: list[Block], state: dict) -> None:
        sent = state["sent"]
        body = _copy_body(self.ctx.base_id, blocks[sent:], self.ctx.source, self.encoding, start=sent + 1)
        state["sent"] = len(blocks)
        self._put(_Chunk(seq, msg, sha, body))

    def close(self) -> None:
        self.stop.set()
        self.inbox.put(_END)
        self.thread.join()


#: the GIL switch interval while a worker parses (seconds; Python's default is 0.005). Each time
#: the caller's thread comes back from waiting on Postgres it needs the GIL, which the busy worker
#: gives up only every switch interval: at 5 ms that is ~5 ms per round trip (a chunk's COPY has
#: two or three), 0.4 ms at 0.5 ms (measured with a busy thread: 5.9-6.4 -> 0.4-0.8 ms per wait)
GIL_SWITCH_S = 0.0005
_switch_lock = threading.Lock()
_switch_users = [0, 0.0]  # workers running, the interval before the first


@contextmanager
def _responsive_gil() -> Iterator[None]:
    """A short GIL switch interval while any worker runs (process-wide, restored by the last)."""
    with _switch_lock:
        if not _switch_users[0]:
            _switch_users[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_users[1], GIL_SWITCH_S))
        _switch_users[0] += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users[0] -= 1
            if not _switch_users[0]:
                sys.setswitchinterval(_switch_users[1])


def _prepared(ctx: RunContext, messages: Iterable[ReceivedMessage], validate: bool,
              encoding: str) -> Generator[_Start | _Chunk | _Prepared | None, None, None]:
    """The messages prepared ahead (issue 15), by a worker thread, while the caller writes.

    While the caller writes message N (its file row, the COPY of its blocks, its log row, all
    waiting on Postgres), the worker parses message N+1; and a big valid SIMS 7 message (a
    whole school in one message) comes in :class:`_Chunk` s of ``CHUNK_BLOCKS`` blocks or more,
    the worker parsing the next chunk while Postgres takes the last. On two cores the sum of
    parsing and Postgres' work becomes about their maximum. Memory stays bounded: the
    messages are fetched from ``messages`` in the caller's thread, in order, one ahead of the
    worker, and at most two chunks or messages wait. An error parsing that is not a
    :class:`MessageError` is raised here, at its message, as before; when the caller stops
    (an error writing), the worker stops too. While the worker runs, the GIL changes hands
    every :data:`GIL_SWITCH_S`, so that the caller's thread is not kept waiting for it.

    The first item is None, once the worker has its first messages: the caller can then do
    its own work (delete an earlier attempt) while they are parsed."""
    with _responsive_gil():
        yield from _prepared_by_worker(ctx, messages, validate, encoding)


def _prepared_by_worker(ctx: RunContext, messages: Iterable[ReceivedMessage], validate: bool,
                        encoding: str) -> Generator[_Start | _Chunk | _Prepared | None, None, None]:
    worker = _Worker(ctx, validate, encoding)
    try:
        it = enumerate(messages, start=1)
        pending = 0
        fed_all = False
        started = False
        while True:
            while not fed_all and pending < 2:  # the message being parsed and the next one
                nxt = next(it, None)
                if nxt is None:
                    fed_all = True
                    worker.inbox.put(_END)
                else:
                    worker.inbox.put(nxt)
                    pending += 1
                del nxt
            if not started:
                started = True
                yield None
                continue
            item = worker.out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Prepared):
                pending -= 1
            yield item
            del item
    finally:
        worker.close()


_INSERT_FILE = """INSERT INTO raw.inbound_file (base_id, task_key, dag_id, run_id, window_start,
                      window_end, window_order, seq, source, data_filter, label, content_type, payload,
                      size_bytes, sha256, status, error, pupils, blocks)
                  VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %b, %s, %s, %s, %s, %s, %s)
                  RETURNING file_id"""


def _insert_file(conn: Connection, ctx: RunContext, seq: int, msg: ReceivedMessage, sha256: str, status: str,
                 error: MessageError | None, pupils: int | None, blocks: int | None) -> int:
    return scalar(conn, _INSERT_FILE, (
        ctx.base_id, ctx.task_key, ctx.dag_id, ctx.run_id, ctx.window_start, ctx.window_end, ctx.window_order, seq,
        ctx.source, ctx.data_filter, msg.label, msg.content_type, msg.content, len(msg.content), sha256, status,
        None if error is None else str(error), pupils, blocks))


def _store(conn: Connection, ctx: RunContext, messages: Iterable[ReceivedMessage], summary: ExtractSummary, *,
           validate: bool) -> None:
    seen: dict[tuple, list[_Copy]] = {}
    # per file: its blocks before the anchors, and its rejected pupils (not the blocks: a run's
    # blocks are freed as soon as they are written)
    rejected_by_file: dict[int, tuple[int, list[RejectedPupil]]] = {}
    with conn.transaction():
        streaming: int | None = None  # the file row its chunks went to, under a savepoint
        # closed (its worker stopped) on the way out, even on an error
        with closing(_prepared(ctx, messages, validate, conn.info.encoding)) as prepared:
            next(prepared)  # the worker parses the first messages while an earlier attempt is deleted
            replaced = _forget_previous(conn, ctx)
            if replaced:
                log.info("replacing %d file(s) from an earlier attempt at this window", replaced)
            for prep in prepared:
                if prep is None:
                    continue
                if isinstance(prep, _Start):  # written while it is parsed; its outcome at its end
                    conn.execute("SAVEPOINT extract_stream")
                    streaming = _insert_file(conn, ctx, prep.seq, prep.msg, prep.sha256, "received",
                                             None, None, None)
                    continue
                if isinstance(prep, _Chunk):
                    if streaming is None:  # its outcome is known at its end: written then
                        conn.execute("SAVEPOINT extract_stream")
                        streaming = _insert_file(conn, ctx, prep.seq, prep.msg, prep.sha256, "received",
                                                 None, None, None)
                    _copy_blocks(conn, streaming, prep.body)
                    continue
                msg, parsed, error, blocks = prep.msg, prep.parsed, prep.error, prep.blocks
                if prep.streamed and streaming is not None and parsed is not None:
                    file_id = streaming
                    conn.execute("UPDATE raw.inbound_file SET status = 'parsed', pupils = %s, blocks = %s "
                                 "WHERE file_id = %s", (parsed.pupils, len(blocks), file_id))
                    conn.execute("RELEASE SAVEPOINT extract_stream")
                else:
                    if streaming is not None:  # the fast path gave up: what it wrote is void
                        conn.execute("ROLLBACK TO SAVEPOINT extract_stream")
                        conn.execute("RELEASE SAVEPOINT extract_stream")
                    # parsed first, so the file row is written once, with its outcome (no UPDATE per file)
                    file_id = _insert_file(conn, ctx, prep.seq, msg, prep.sha256,
                                           "suspense" if parsed is None else "parsed", error,
                                           None if parsed is None else parsed.pupils,
                                           None if parsed is None else len(blocks))
                streaming = None
                summary.files += 1
                summary.bytes += len(msg.content)
                summary.file_ids.append(file_id)
                if parsed is None:
                    summary.failed += 1
                    summary.errors.append((file_id, msg.label, str(error)))
                    log_stage_file(conn, ctx, "extract", file_id, {"bytes": len(msg.content)},
                                   f"{msg.label}: put in suspense: {error}", "error", replace=False)
                    log.error("base %s file %s (%s) put in suspense: %s", ctx.base_id, file_id, msg.label, error)
                    continue
                _copy_blocks(conn, file_id, prep.body)  # (empty when streamed)
                _copies(file_id, msg.label, msg.group, blocks, seen)
                rejected_by_file[file_id] = (len(parsed.blocks), parsed.rejected)
                by_type: dict[str, int] = {}
                for b in parsed.blocks:
                    by_type[b.block_type] = by_type.get(b.block_type, 0) + 1
                    summary.blocks_by_type[b.block_type] = summary.blocks_by_type.get(b.block_type, 0) + 1
                summary.pupils += parsed.pupils
                summary.blocks += len(blocks)
                summary.rejected_pupils += len(parsed.rejected)
                counts = {"pupils": parsed.pupils, "blocks": len(blocks), "bytes": len(msg.content),
                          "blocks_by_type": by_type}
                text = f"{msg.label}: {parsed.pupils} pupils, {len(blocks)} blocks"
                if parsed.rejected:
                    counts["rejected_pupils"] = len(parsed.rejected)
                    text += (f"; {len(parsed.rejected)} pupil(s) not imported, failing the schema "
                             f"(first: {parsed.rejected[0].detail})")
                log_stage_file(conn, ctx, "extract", file_id, counts, text,
                               "warning" if parsed.rejected else "info", replace=False)
        rows, summary.duplicate_pupils = _rejected_rows(rejected_by_file, seen)
        if rows:
            with conn.cursor() as cur, cur.copy(
                    "COPY raw.rejected_block (file_id, ordinal, rule, field, detail, report) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        level = "error" if summary.failed else "warning" if rows else "info"
        text = (f"extract: {summary.files} file(s), {summary.failed} failed, "
                f"{summary.pupils} pupils, {summary.blocks} blocks")
        if summary.rejected_pupils or summary.duplicate_pupils:
            text += (f"; not imported: {summary.rejected_pupils} pupil(s) failing the schema, "
                     f"{summary.duplicate_pupils} copies of pupils sent twice (anomalies at validate)")
        log_stage_file(conn, ctx, "extract", None, summary.counts(), text, level, replace=False)
