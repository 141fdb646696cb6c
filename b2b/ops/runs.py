"""Run control (issue 9): one run per base at a time, in window order; a run's hash-cache
entries and watermark count only once the whole run has succeeded.

A run of an export DAG

1. **begins** in its first stage (:func:`begin_run`, in every stage): it registers in ``ops.run`` and waits
   until it may take the base's lease (``ops.base_lease``, one row per base, shared by all of
   the base's DAGs): the lease is free (or held by this same run, or stale), no run of the
   base with an earlier window is waiting for it, and the DAG's previous run (Airflow's
   previous DAG run, e.g. of the same backfill) is no longer queued or running;
2. runs its stages, holding the lease (each stage checks that it does, and takes it again the
   same way when a stage is cleared after the run failed);
3. **commits** in its last stage (:func:`finish_run`): its hash-cache entries become
   ``committed`` (the hash filter ignores uncommitted ones, so a run that failed after
   ``load`` never hides a change from the next run), the (base, task) watermark moves to
   its window end (F5), its ``ops.run`` row becomes ``success`` and the lease is released.
   A run that fails for good is marked ``failed`` and releases the lease
   (:func:`fail_run`, the operators' failure callback); a lease older than
   :data:`STALE_LEASE` (a worker killed without callback) can be taken over.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from b2b.context import RunContext, one, run_files
from b2b.errors import RunLeaseError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

#: how long a run waits for its base's lease before failing (retryable)
LEASE_WAIT = timedelta(hours=5)
#: a lease older than this (longer than a DAG run may last) belongs to a dead run
STALE_LEASE = timedelta(hours=7)
#: a waiting run that has not looked at the lease for this long is gone
WAITER_TIMEOUT = timedelta(minutes=10)
#: a waiting task polls this long, then is rescheduled (its worker slot freed) for this long
WAIT_IN_TASK = timedelta(seconds=30)
RESCHEDULE_AFTER = timedelta(seconds=30)
POLL_SECONDS = 2.0


def watermark(conn: Connection, base_id: str, task_key: str) -> datetime | None:
    """The end of the (base, task)'s last successful window (F5), or None."""
    row = conn.execute("SELECT window_end FROM ops.watermark WHERE base_id = %s AND task_key = %s",
                       (base_id, task_key)).fetchone()
    return row[0] if row else None


def recorded_start(conn: Connection, dag_id: str, window_end: datetime) -> tuple[bool, datetime | None]:
    """(found, window_start) of an earlier attempt of this run window: a rerun asks the same again."""
    row = conn.execute("SELECT window_start FROM ops.run WHERE dag_id = %s AND window_end = %s",
                       (dag_id, window_end)).fetchone()
    return (row is not None, row[0] if row else None)


def record_gap(conn: Connection, ctx: RunContext, gap_from: datetime, since: datetime) -> None:
    """An ``ops.alert`` for changes the run could not ask for any more (older than the F5 cap)."""
    import json

    conn.execute(
        """INSERT INTO ops.alert (kind, base_id, task_key, details)
           SELECT 'changed_data_gap', %s, %s, %s
            WHERE NOT EXISTS (SELECT 1 FROM ops.alert WHERE kind = 'changed_data_gap' AND base_id = %s
                                 AND task_key = %s AND details->>'dag_id' = %s AND details->>'window_end' = %s)""",
        (ctx.base_id, ctx.task_key,
         json.dumps({"dag_id": ctx.dag_id, "window_end": ctx.window_end.isoformat(), "from": gap_from.isoformat(),
                     "to": since.isoformat(), "reason": "older than the migration date or 3 months (F5)"}),
         ctx.base_id, ctx.task_key, ctx.dag_id, ctx.window_end.isoformat()))
    log.warning("base %s task %s: changes from %s to %s cannot be asked for any more (F5 cap)",
                ctx.base_id, ctx.task_key, gap_from.isoformat(), since.isoformat())


def begin_run(conn: Connection, ctx: RunContext, previous_end: datetime | None = None, *,
              predecessor_pending: Callable[[], str] | None = None, wait: timedelta = LEASE_WAIT,
              poll: float = POLL_SECONDS, give_up: bool = True,
              sleep: Callable[[float], None] = time.sleep) -> dict:
    """Register the run and take its base's lease (see the module docstring); waits, then raises
    :class:`RunLeaseError` (retryable) after ``wait``.

    ``previous_end`` is the end of the DAG's previous window (Airflow's data interval start;
    None for a manual run), recorded with the run. ``predecessor_pending`` tells whether the
    DAG's previous run still has to go first (the operators ask Airflow whether the previous
    DAG run is queued or running): it returns what it waits for, or ''. ``give_up=False``
    raises after ``wait`` but leaves the run waiting (the operator reschedules the task,
    freeing its worker slot, and asks again: :func:`waiting_for`).
    """
    conn.execute(
        """INSERT INTO ops.run (dag_id, window_end, base_id, task_key, run_id, window_start, previous_end,
                                window_order, state)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'waiting')
           ON CONFLICT (dag_id, window_end) DO UPDATE
              SET run_id = EXCLUDED.run_id, registered_at = now(), finished_at = NULL,
                  previous_end = EXCLUDED.previous_end,
                  waiting_since = CASE WHEN ops.run.state = 'waiting' THEN ops.run.waiting_since ELSE now() END,
                  state = CASE WHEN ops.run.state = 'running' THEN 'running' ELSE 'waiting' END""",
        (ctx.dag_id, ctx.window_end, ctx.base_id, ctx.task_key, ctx.run_id, ctx.window_start, previous_end,
         ctx.window_order))
    started = time.monotonic()
    waited_for = ""
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('b2b.lease.' || %s))", (ctx.base_id,))
            conn.execute("UPDATE ops.run SET registered_at = now() WHERE dag_id = %s AND window_end = %s",
                         (ctx.dag_id, ctx.window_end))
            blocked = _blocked_by(conn, ctx)
            waited_for = "" if blocked is None else (
                blocked or (predecessor_pending() if predecessor_pending else ""))
            if not waited_for:
                conn.execute(
                    """INSERT INTO ops.base_lease (base_id, dag_id, window_end, run_id) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (base_id) DO UPDATE SET dag_id = EXCLUDED.dag_id,
                              window_end = EXCLUDED.window_end, run_id = EXCLUDED.run_id, taken_at = now()""",
                    (ctx.base_id, ctx.dag_id, ctx.window_end, ctx.run_id))
                conn.execute("UPDATE ops.run SET state = 'running' WHERE dag_id = %s AND window_end = %s",
                             (ctx.dag_id, ctx.window_end))
                return {"waited_seconds": round(time.monotonic() - started, 1)}
        if time.monotonic() - started >= wait.total_seconds():
            if give_up:
                conn.execute("UPDATE ops.run SET state = 'failed', finished_at = now() WHERE dag_id = %s "
                             "AND window_end = %s", (ctx.dag_id, ctx.window_end))
            raise RunLeaseError(f"waited {wait} for {waited_for}", base=ctx.base_id)
        sleep(poll)


def waiting_for(conn: Connection, ctx: RunContext) -> timedelta:
    """How long this run has been waiting for its base's lease (this attempt)."""
    row = conn.execute("SELECT now() - waiting_since FROM ops.run WHERE dag_id = %s AND window_end = %s "
                       "AND state = 'waiting'", (ctx.dag_id, ctx.window_end)).fetchone()
    return row[0] if row else timedelta(0)


def _blocked_by(conn: Connection, ctx: RunContext) -> str | None:
    """Why this run may not take the lease now ('' = it may; None = it holds it already)."""
    holder = conn.execute(
        """SELECT dag_id, window_end, now() - taken_at > %s FROM ops.base_lease WHERE base_id = %s""",
        (STALE_LEASE, ctx.base_id)).fetchone()
    if holder and (holder[0], holder[1]) == (ctx.dag_id, ctx.window_end):
        return None  # the run's next stage (or a retry): it holds the lease already
    if holder and not holder[2]:
        return f"the lease of base {ctx.base_id} (held by {holder[0]} window {holder[1].isoformat()})"
    earlier = conn.execute(
        """SELECT dag_id, window_end FROM ops.run
            WHERE base_id = %s AND state = 'waiting' AND window_order < %s AND registered_at > now() - %s
              AND NOT (dag_id = %s AND window_end = %s)
            ORDER BY window_order LIMIT 1""",
        (ctx.base_id, ctx.window_order, WAITER_TIMEOUT, ctx.dag_id, ctx.window_end)).fetchone()
    if earlier:
        return f"the earlier window {earlier[1].isoformat()} of {earlier[0]}"
    return ""


def finish_run(conn: Connection, ctx: RunContext) -> dict:
    """The run succeeded: commit its hash-cache entries, move the watermark, release the lease."""
    with conn.transaction():
        files = run_files(conn, ctx)
        # one statement: the cache entries count, the watermark moves (never back), the run succeeds
        committed, mark = one(conn,
            """WITH c AS (UPDATE ops.hash_cache SET committed = true WHERE file_id = ANY(%(files)s) AND NOT committed
                          RETURNING 1),
                    w AS (INSERT INTO ops.watermark (base_id, task_key, window_end, dag_id, run_id)
                          VALUES (%(base)s, %(task)s, %(end)s, %(dag)s, %(run)s)
                          ON CONFLICT (base_id, task_key) DO UPDATE
                             SET window_end = EXCLUDED.window_end, dag_id = EXCLUDED.dag_id,
                                 run_id = EXCLUDED.run_id, updated_at = now()
                           WHERE ops.watermark.window_end < EXCLUDED.window_end
                          RETURNING window_end),
                    r AS (INSERT INTO ops.run (dag_id, window_end, base_id, task_key, run_id, window_start,
                                               window_order, state, finished_at)
                          VALUES (%(dag)s, %(end)s, %(base)s, %(task)s, %(run)s, %(start)s, %(order)s, 'success',
                                  now())
                          ON CONFLICT (dag_id, window_end) DO UPDATE SET state = 'success', finished_at = now()),
                    l AS (DELETE FROM ops.base_lease WHERE base_id = %(base)s AND dag_id = %(dag)s
                                                       AND window_end = %(end)s)
               SELECT (SELECT count(*) FROM c),
                      coalesce((SELECT window_end FROM w),
                               (SELECT window_end FROM ops.watermark WHERE base_id = %(base)s AND task_key = %(task)s))""",
            {"files": files, "base": ctx.base_id, "task": ctx.task_key, "end": ctx.window_end, "dag": ctx.dag_id,
             "run": ctx.run_id, "start": ctx.window_start, "order": ctx.window_order})
    return {"cache_entries_committed": committed, "watermark": mark.isoformat() if mark else None}


def fail_run(conn: Connection, base_id: str, dag_id: str, window_end: datetime) -> None:
    """The run failed for good: mark it and release the base's lease if it holds it."""
    with conn.transaction():
        conn.execute("UPDATE ops.run SET state = 'failed', finished_at = now() WHERE dag_id = %s "
                     "AND window_end = %s AND state IN ('waiting', 'running')", (dag_id, window_end))
        _release(conn, base_id, dag_id, window_end)


def release_run(conn: Connection, ctx: RunContext) -> None:
    """A run that commits no hash-cache entries and moves no watermark (a manual import,
    ``b2b.ingest.manual``) has ended: mark it and release the base's lease."""
    with conn.transaction():
        conn.execute("UPDATE ops.run SET state = 'success', finished_at = now() WHERE dag_id = %s "
                     "AND window_end = %s", (ctx.dag_id, ctx.window_end))
        _release(conn, ctx.base_id, ctx.dag_id, ctx.window_end)


def _release(conn: Connection, base_id: str, dag_id: str, window_end: datetime) -> None:
    conn.execute("DELETE FROM ops.base_lease WHERE base_id = %s AND dag_id = %s AND window_end = %s",
                 (base_id, dag_id, window_end))
