"""Which window of data a run asks the school for. Windows come from Airflow (or, for a
manual run without a logical date, from the run's ``run_after``), never from now() inside a stage.

F5 "since the last successful run": a changed-data run asks from the (base, task)
watermark — the end of its last successful window (``ops.watermark``) — when that is
earlier than the run's own data interval start, so a failed or skipped day is covered by
the next run. The start is capped: never before the base's migration date, never more
than three months back; anything older it could not cover is a *gap* (an ``ops.alert``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

#: F5: a changed-data run never reaches back further than this.
MAX_LOOKBACK = timedelta(days=92)

#: filters whose runs send only changes since the window start
INCREMENTAL = {"changed_data"}


def is_incremental(data_filter: str, attendance: str | None) -> bool:
    return data_filter in INCREMENTAL or (data_filter == "attendance" and attendance == "changed")


@dataclass(frozen=True)
class Window:
    """What one run asks for: ``since`` (None = everything) up to ``until``; ``gap_from`` is
    set when the last successful run ended before the cap, so changes from ``gap_from`` up
    to ``since`` cannot be asked for any more."""

    since: datetime | None
    until: datetime
    gap_from: datetime | None = None


def plan_window(data_filter: str, attendance: str | None, interval_start: datetime | None,
                interval_end: datetime, migrated_on: date | None = None,
                watermark: datetime | None = None) -> Window:
    """The window of one run (see the module docstring).

    * snapshot, attainment and full-year attendance: ``(None, end)``.
    * changed data and SIMS Primary attendance changes: from the earlier of the run's data
      interval start and the watermark (a manual run without a data interval: the
      watermark, else the cap) up to the end, capped by the migration date and 3 months.
    """
    if interval_end is None or interval_end.tzinfo is None:
        raise ValueError("the run has no timezone-aware data interval end; use a data-interval timetable")
    if not is_incremental(data_filter, attendance):
        return Window(None, interval_end)
    if interval_start is not None and interval_start >= interval_end:
        raise ValueError(
            f"zero-width data interval {interval_start.isoformat()}..{interval_end.isoformat()}: "
            "changed-data DAGs need a data-interval timetable (CronDataIntervalTimetable)"
        )
    floor = interval_end - MAX_LOOKBACK
    if migrated_on is not None:
        floor = max(floor, datetime.combine(migrated_on, time(0), tzinfo=UTC))
    start = interval_start
    if watermark is not None and (start is None or watermark < start):
        start = watermark  # F5: since the last successful run
    if start is None:  # a manual run of a task that never succeeded: as far back as allowed
        return Window(floor, interval_end)
    if start < floor:
        return Window(floor, interval_end, gap_from=start)
    return Window(start, interval_end)


def extract_window(data_filter: str, attendance: str | None, interval_start: datetime | None,
                   interval_end: datetime, migrated_on: date | None = None,
                   watermark: datetime | None = None) -> tuple[datetime | None, datetime]:
    """(since, until) for one run (:func:`plan_window` without the gap)."""
    w = plan_window(data_filter, attendance, interval_start, interval_end, migrated_on, watermark)
    return w.since, w.until
