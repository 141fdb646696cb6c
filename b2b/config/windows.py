"""Which window of data a run asks the school for. Windows come from Airflow, never now()."""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

#: F5: a changed-data run never reaches back further than this.
MAX_LOOKBACK = timedelta(days=92)

#: filters whose runs send only changes since the window start
INCREMENTAL = {"changed_data"}


def extract_window(data_filter: str, attendance: str | None, interval_start: datetime,
                   interval_end: datetime, migrated_on: date | None = None) -> tuple[datetime | None, datetime]:
    """(since, until) for one run.

    * snapshot, attainment and full-year attendance: ``(None, end)`` — everything as of
      the end of the window.
    * changed data and SIMS Primary attendance changed data: ``[start, end)``, where the
      start is never before the base's migration date (F5: change tracking resets on
      migration) nor more than three months before the end (F5).
    """
    if interval_end is None or interval_end.tzinfo is None:
        raise ValueError("the run has no timezone-aware data interval end; use a data-interval timetable")
    incremental = data_filter in INCREMENTAL or (data_filter == "attendance" and attendance == "changed")
    if not incremental:
        return None, interval_end
    if interval_start is None:
        raise ValueError("an incremental task needs a data interval start")
    if interval_start >= interval_end:
        raise ValueError(
            f"zero-width data interval {interval_start.isoformat()}..{interval_end.isoformat()}: "
            "changed-data DAGs need a data-interval timetable (CronDataIntervalTimetable)"
        )
    since = max(interval_start, interval_end - MAX_LOOKBACK)
    if migrated_on is not None:
        since = max(since, datetime.combine(migrated_on, time(0), tzinfo=UTC))
    return since, interval_end
