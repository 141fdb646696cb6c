"""Manual import (F39): a message file an officer received by hand goes through exactly the
path a scheduled DAG run takes.

Files: a SIMS 7 XML export (``.xml``, the base's own DfE number in its header) or a SIMS
Primary data-group page (``.json``: ``{"dataGroup": "student", "items": [...]}``). The
file is stored (``raw.inbound_file``), parsed into blocks, and run through the stages of
``b2b.pipeline`` in order: hash filter, validate, load, match, conflicts, apply and, for
snapshots and changed data, contacts. A file that is not well-formed, is for another
school, breaks a cap or fails a structural check is kept in suspense with the reason (as
over HTTP): none of its blocks are loaded.

The run window of a manual file: ``dag_id`` ``b2b__<DfE>__manual_import`` (one per base, so
manual files never replace a scheduled run's files), ``window_end`` the moment of import
(later imports win over earlier data, as a later scheduled run would), no ``window_start``,
``run_id`` ``manual__<sha256 prefix>``. The same file imported twice for the same base is
recognised by its SHA-256 and not processed again. One manual import of a base at a time
(a second one at once is refused: :class:`ManualImportBusy`), and it takes the base's run
lease as a DAG run does (``b2b.ops.runs``), waiting up to a minute for a scheduled run of the
base to finish. Only a regular file is read: a directory, a device or a symbolic link (which
could point anywhere the pipeline's login may read, /etc/passwd) is refused before reading.

``b2b ingest FILE --base DFE [--filter snapshot|changed_data|attendance|attainment]`` imports
one file; the ``b2b__manual_import`` DAG watches ``$B2B_HOME/inbound/xml/<DfE>/`` and moves
each file it processed to ``done/`` (or ``suspense/``, with a ``.reason.txt``). In the folder
the filter is read from the file name (``…_changed_data_…``, ``…_attendance_…``,
``…_attainment_…``; otherwise a snapshot). A base switched off in the catalogue
(``enabled: false``) is refused.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from b2b.context import one, scalar
from b2b.dropfolder import move_aside
from b2b.errors import DisabledError, IngestError, RunLeaseError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

FILTERS = ("snapshot", "changed_data", "attendance", "attainment")
CONTACT_FILTERS = ("snapshot", "changed_data")
TASK_KEY = "manual_import"
#: how long a manual import waits for its base's lease (a scheduled run of the base)
LEASE_WAIT = timedelta(minutes=1)


class ManualImportBusy(RunLeaseError):
    """Another manual import of the same base is under way: try again when it has finished."""


@dataclass(frozen=True)
class ManualFile:
    path: Path
    base_id: str
    data_filter: str = "snapshot"


def manual_dag_id(base_id: str) -> str:
    return f"b2b__{base_id}__{TASK_KEY}"


def xml_inbox(home: Path | None = None) -> Path:
    """The folder the manual-import DAG watches: ``$B2B_HOME/inbound/xml/`` (one folder per DfE)."""
    from b2b.db import b2b_home

    return (home or b2b_home()) / "inbound" / "xml"


def _window_end(conn: Connection, dag_id: str) -> datetime:
    """Now, strictly after any earlier manual window of this base (two imports in one instant)."""
    now = datetime.now(UTC)
    last = scalar(conn, "SELECT max(window_end) FROM raw.inbound_file WHERE dag_id = %s", (dag_id,))
    return max(now, last + timedelta(microseconds=1)) if last else now


def _base(catalogue_path: Any, base_id: str) -> Any:
    from b2b.config.catalogue import load_catalogue
    from b2b.errors import ConfigError

    cat = load_catalogue(catalogue_path)
    if base_id not in cat.bases:
        raise ConfigError("not a base in the catalogue", base=base_id)
    base = cat.bases[base_id]
    if not getattr(base, "enabled", True):
        raise DisabledError("the base is switched off in the catalogue (enabled: false); "
                            "switch it on to import its files", base=base_id)
    return cat, base


def ingest_file(conn: Connection, path: Path, base_id: str, *, data_filter: str = "snapshot", catalogue_path: Any = None,
                group: str | None = None, report_dir: Path | None = None) -> dict[str, Any]:
    """Import one file for one base through the DAG path; the outcome and counts.

    ``status`` is ``loaded`` (every stage ran), ``suspense`` (kept with ``reason``; nothing
    loaded) or ``duplicate`` (this file was already imported for this base)."""
    from b2b.config.settings import Settings

    path = Path(path)
    if data_filter not in FILTERS:
        raise IngestError(f"unknown filter {data_filter!r}; one of {', '.join(FILTERS)}", base=base_id, file=path.name)
    cat, base = _base(catalogue_path, base_id)
    settings = Settings.from_env(cat.la.settings)
    content = _read(path, base_id, settings.max_message_bytes)
    if not conn.autocommit:  # (tests: one transaction, nothing to wait for)
        return _ingest(conn, path, base_id, base, settings, content, data_filter, group, report_dir)
    # one manual import of a base at a time (two officers, or the folder DAG and an officer)
    if not scalar(conn, "SELECT pg_try_advisory_lock(hashtext('b2b.manual.' || %s))", (base_id,)):
        raise ManualImportBusy("another manual import of this base is under way; try again when it has "
                               "finished", base=base_id)
    try:
        return _ingest(conn, path, base_id, base, settings, content, data_filter, group, report_dir)
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext('b2b.manual.' || %s))", (base_id,))


def _read(path: Path, base_id: str, cap: int) -> bytes:
    """The bytes of a regular file, never following a symbolic link; at most ``cap``."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        why = "a symbolic link, not a file received" if path.is_symlink() else f"cannot be read: {type(exc).__name__}"
        raise IngestError(f"{why}; not read", base=base_id, file=path.name) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IngestError("not a regular file (a folder or a device); not read", base=base_id, file=path.name)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > cap:
            raise IngestError(f"{st.st_size:,} bytes is over the {cap:,}-byte cap (MAX_MESSAGE_BYTES); "
                              "not read", base=base_id, file=path.name)
        content = f.read(cap + 1)
    if len(content) > cap:  # (grew while read)
        raise IngestError(f"over the {cap:,}-byte cap (MAX_MESSAGE_BYTES); not read", base=base_id, file=path.name)
    return content


def _ingest(conn: Connection, path: Path, base_id: str, base: Any, settings: Any, content: bytes, data_filter: str,
            group: str | None, report_dir: Path | None) -> dict[str, Any]:
    from b2b.context import RunContext
    from b2b.ops import runs

    digest = hashlib.sha256(content).hexdigest()
    dag_id = manual_dag_id(base_id)
    seen = conn.execute("""SELECT file_id FROM raw.inbound_file WHERE dag_id = %s AND sha256 = %s
                            AND status IN ('parsed', 'loaded')""", (dag_id, digest)).fetchone()
    if seen:
        return {"status": "duplicate", "file_id": seen[0]}
    xml = content.lstrip()[:1] == b"<"
    if not content.strip():
        reason = "an empty file (no message in it)"
    elif base.kind == "sims7" and not xml:
        reason = "a SIMS 7 base sends XML exports; this file is not XML"
    elif base.kind == "sims_primary" and xml:
        reason = "a SIMS Primary base sends JSON data-group pages; this file is XML"
    else:
        reason = None
    ctx = RunContext(base_id=base_id, task_key=TASK_KEY, dag_id=dag_id, run_id=f"manual__{digest[:16]}",
                     source=base.kind, data_filter=data_filter, window_start=None,
                     window_end=_window_end(conn, dag_id))
    if conn.autocommit:  # the base's lease, as a DAG run takes it: no scheduled run of the base meanwhile
        runs.begin_run(conn, ctx, wait=LEASE_WAIT, poll=1.0)
    try:
        out = _stages(conn, ctx, path, base, settings, content, digest, reason, data_filter, group, report_dir)
    except BaseException:
        if conn.autocommit:
            runs.fail_run(conn, base_id, dag_id, ctx.window_end)
        raise
    if conn.autocommit:
        runs.release_run(conn, ctx)
    return out


def _stages(conn: Connection, ctx: Any, path: Path, base: Any, settings: Any, content: bytes, digest: str,
            reason: str | None, data_filter: str, group: str | None, report_dir: Path | None) -> dict[str, Any]:
    from b2b import pipeline
    from b2b.context import log_stage_file
    from b2b.db import b2b_home
    from b2b.ingest.extract import ReceivedMessage

    base_id, dag_id = ctx.base_id, ctx.dag_id
    if reason:
        # kept in suspense like a file that failed to parse: the trail stays, nothing is loaded
        with conn.transaction():
            file_id = scalar(conn,
                """INSERT INTO raw.inbound_file (base_id, task_key, dag_id, run_id, window_end, window_order, seq,
                       source, data_filter, label, content_type, payload, size_bytes, sha256, status, error)
                   VALUES (%s, %s, %s, %s, %s, %s, 1, %s, %s, %s, 'application/octet-stream', %s, %s, %s,
                           'suspense', %s) RETURNING file_id""",
                (base_id, TASK_KEY, dag_id, ctx.run_id, ctx.window_end, ctx.window_order, base.kind, data_filter,
                 path.name, content, len(content), digest, reason))
            log_stage_file(conn, ctx, "extract", file_id, {"bytes": len(content)},
                           f"{path.name}: put in suspense: {reason}", "error", replace=False)
        return {"status": "suspense", "file_id": file_id, "reason": reason}
    xml = content.lstrip()[:1] == b"<"
    msg = ReceivedMessage(path.name, content, "application/xml" if xml else "application/json", group=group)
    summary = pipeline.store_messages(conn, ctx, [msg])
    file_id = summary.file_ids[0]
    if summary.failed:
        return {"status": "suspense", "file_id": file_id, "reason": summary.errors[0][2]}
    stages: dict[str, Any] = {"extract": summary.counts()}
    stages["hash_filter"] = pipeline.hash_filter(conn, ctx, settings)
    stages["validate"] = pipeline.validate(conn, ctx, report_dir or b2b_home() / "reports" / "validation")
    status = one(conn, "SELECT status, error FROM raw.inbound_file WHERE file_id = %s", (file_id,))
    if status[0] == "suspense":
        return {"status": "suspense", "file_id": file_id, "reason": status[1], "stages": stages}
    stages["load"] = pipeline.load(conn, ctx)
    stages["match"] = pipeline.match(conn, ctx, settings)
    stages["conflicts"] = pipeline.conflicts(conn, ctx)
    stages["apply"] = pipeline.apply(conn, ctx)
    if data_filter in CONTACT_FILTERS:
        stages["contacts"] = pipeline.contacts(conn, ctx)
    log.info("manual import base %s file %s: loaded (file id %s)", base_id, path.name, file_id)
    return {"status": "loaded", "file_id": file_id, "pupils": summary.pupils, "blocks": summary.blocks,
            "stages": stages}


def filter_from_name(name: str) -> str:
    for f in ("changed_data", "attendance", "attainment", "snapshot"):
        if f in name.lower():
            return f
    return "snapshot"




def ingest_folder(conn: Connection, root: Path | None = None, *, catalogue_path: Any = None) -> dict[str, Any]:
    """Import every file waiting in ``root/<DfE>/`` (oldest name first); move each to ``done/``
    or ``suspense/``. Files of a switched-off or unknown base are left where they are (logged)."""
    from b2b.errors import B2BError, ConfigError

    root = Path(root or xml_inbox())
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    out: dict[str, Any] = {"files": 0, "loaded": 0, "suspense": 0, "duplicate": 0, "left": 0, "reasons": []}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".xml", ".json")):
            out["files"] += 1
            try:
                r = ingest_file(conn, path, folder.name, data_filter=filter_from_name(path.name),
                                catalogue_path=catalogue_path)
            except (DisabledError, ConfigError, RunLeaseError) as exc:  # (busy: the next run tries again)
                out["left"] += 1
                out["reasons"].append(f"{path.name}: {exc}")
                log.warning("manual import: %s left in place: %s", path.name, exc)
                continue
            except B2BError as exc:
                r = {"status": "suspense", "reason": str(exc)}
            out[r["status"]] += 1
            if r["status"] == "suspense":
                out["reasons"].append(f"{path.name}: {r['reason']}")
                move_aside(path, folder / "suspense", r["reason"])
            else:
                move_aside(path, folder / "done")
    return out
