"""Build the Airflow DAG for one (base, scheduled task) pair of the catalogue.

Kept free of I/O and heavy imports: it runs at DAG-parse time for every pair.
"""
from __future__ import annotations

import inspect
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, chain
from airflow.timetables.interval import CronDataIntervalTimetable

from b2b.config.windows import MAX_LOOKBACK
from b2b_operators import assets
from b2b_operators.extract import ExtractOperator
from b2b_operators.pipeline import STAGE_CLASSES, PipelineOperator
from b2b_operators.report_dags import build_report_dags

if TYPE_CHECKING:
    from b2b.config.catalogue import Catalogue, DagSpec, La

CONTACT_FILTERS = ("snapshot", "changed_data")

DEFAULT_ARGS = {
    "owner": "b2b",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": True,
}

FILTER_TEXT = {
    "snapshot": "a **snapshot**: every student's data blocks as of the end of the window",
    "changed_data": "**changed data**: the blocks that changed in the run's data interval "
                    f"(never before the base's migration date, never more than {MAX_LOOKBACK.days} days back — F5)",
    "attendance": "**attendance** marks",
    "attainment": "**attainment** results for the chosen aspect hierarchies",
}


def _doc(spec: DagSpec, la: La) -> str:
    b, t = spec.base, spec.task
    group = t.group_type.upper() if t.group_type != "ncy" else (
        "NCY " + (", ".join(t.ncys) if t.ncys else "all"))
    lines = [
        f"### {t.name} — {b.name} ({b.dfe})",
        t.description or "",
        "",
        f"Exports from the school's **{'SIMS 7' if b.kind == 'sims7' else 'SIMS Primary'}** "
        f"(connection `{b.conn_id}`) {FILTER_TEXT.get(t.filter, t.filter)}.",
        "",
        "| | |", "|---|---|",
        f"| filter | `{t.filter}`{' / `' + t.attendance + '`' if t.attendance else ''} |",
        f"| student group | {group} |",
        f"| schedule | `{t.schedule}` ({la.timezone}); each run covers the interval since the previous one |",
    ]
    if t.months:
        lines.append(f"| month filter | {t.months} |")
    if t.hierarchies:
        lines.append(f"| aspect hierarchies | {', '.join(t.hierarchies)} |")
    return "\n".join(lines)


def _first_paragraph(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("``", "`")


def stages_doc(dag: DAG) -> str:
    """The DAG's stages as they run, each described by its operator's own docstring, with the
    assets it updates: generated from the same objects Airflow executes, so it cannot drift."""
    from b2b_operators.pipeline import STAGE_CLASSES

    lines = ["", "#### Stages, in the order they run", ""]
    tasks = dag.topological_sort()
    one = tasks[0] if len(tasks) == 1 and hasattr(tasks[0], "stages") else None
    if one is not None:  # TASK_GRANULARITY run: one task, its stages listed as it runs them
        lines += [f"One task, **`{one.task_id}`**, runs every stage in order (LA setting `TASK_GRANULARITY`); "
                  "each stage has its own section in the task log and its own row in `ops.task_log`.", ""]
    by_stage = {cls.stage: cls for cls in STAGE_CLASSES}
    items = [(s, by_stage[s]) for s in one.stages] if one is not None else [(t.task_id, type(t)) for t in tasks]
    base_id = getattr(one, "base_id", "")
    for n, (name, cls) in enumerate(items, 1):
        task = dag.get_task(name) if one is None else None
        outlets = getattr(task, "outlets", []) if task is not None else assets.stage_outlets(name, base_id)
        outs = ", ".join(f"`{a.name}`" for a in outlets or [])
        lines.append(f"{n}. **`{name}`** — {_first_paragraph(cls)}" + (f" Updates {outs}." if outs else ""))
    lines += ["", "Counts and errors of every stage go to `ops.task_log` (F9). Rerunning a run replaces what "
              "it stored; replay missed windows with `airflow backfill create` (README, *How to backfill*)."]
    return "\n".join(lines)


def settings_doc(la: La) -> str:
    """The LA's settings in force for this DAG (``b2b.config.settings.Settings``, from the catalogue)."""
    from dataclasses import fields

    values = la.settings.as_dict()
    lines = ["", "#### LA settings in force", "", "| setting | value |", "|---|---|"]
    lines += [f"| `{f.name.upper()}` | `{values[f.name]}` |" for f in fields(la.settings)]
    return "\n".join(lines)



def _task_dag(spec: DagSpec, la: La, doc: str, timeout: timedelta) -> DAG:
    """The DAG object of one (base, task) pair: its schedule as a real data interval, tags, docs."""
    import pendulum

    b, t = spec.base, spec.task
    tz = pendulum.timezone(la.timezone)
    tags = ["b2b", f"base:{b.dfe}", b.kind, t.filter]
    if t.attendance:
        tags.append(f"attendance:{t.attendance}")
    if t.direction != "export":
        tags.append(t.direction)
    return DAG(
        dag_id=spec.dag_id,
        dag_display_name=f"{b.name} ({b.dfe}) · {t.name}",
        description=f"{t.name} for {b.name} ({b.dfe})",
        schedule=CronDataIntervalTimetable(t.schedule, timezone=tz),
        start_date=pendulum.instance(datetime.combine(t.start_date, time(0)), tz=tz),
        catchup=t.catchup,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=tags,
        doc_md=doc,
        dagrun_timeout=timeout,
        is_paused_upon_creation=True,
    )


def build_dag(spec: DagSpec, la: La) -> DAG:
    b, t = spec.base, spec.task
    with _task_dag(spec, la, _doc(spec, la), timedelta(hours=6)) as dag:
        common = dict(base_id=b.dfe, base_kind=b.kind, task_key=t.key, data_filter=t.filter,
                      attendance=t.attendance, months=t.months, migrated_on=b.migrated_on, settings=settings(la))

        def stage(cls: Any, task_id: str, **kw: Any) -> Any:
            return cls(task_id=task_id, task_display_name=task_id.replace("_", " ").capitalize(),
                       outlets=assets.stage_outlets(task_id, b.dfe), **common, **kw)

        extract_kw = dict(conn_id=b.conn_id, group_type=t.group_type, ncys=t.ncys, hierarchies=t.hierarchies)
        names = run_stages(t.filter)
        if la.settings.task_granularity == "run":  # one task, every stage logged on its own (issue 15)

            PipelineOperator(task_id="run", task_display_name="Run: " + " → ".join(names),
                             outlets=[a for n in names for a in assets.stage_outlets(n, b.dfe)],
                             stages=names, **common, **extract_kw)
        else:
            classes = {cls.stage: cls for cls in STAGE_CLASSES}
            chain(stage(ExtractOperator, "extract", **extract_kw), *(stage(classes[n], n) for n in names[1:]))
    dag.doc_md = "\n".join([dag.doc_md or "", stages_doc(dag), settings_doc(la)])
    return dag


def run_stages(data_filter: str) -> list[str]:
    """The stages of an export run, in order. Every export can carry student blocks (attendance
    and attainment messages identify the student with one), and a loaded block is cached: so
    every export matches what it loaded; contacts only for the messages that carry contacts
    blocks and leavers' end dates; commit last (cache, watermark, lease: issue 9)."""
    names = ["extract", "hash_filter", "validate", "load", "match", "conflicts", "apply"]
    if data_filter in CONTACT_FILTERS:
        names.append("contacts")
    return [*names, "commit"]


def build_return_dag(spec: DagSpec, la: La) -> DAG:
    """An import-to-school task (F25: Changed Data, NCY group; SIMS 7 bases only, F3)."""
    from b2b_operators.returns import ReturnToSchoolOperator

    b, t = spec.base, spec.task
    group = "NCY " + (", ".join(t.ncys) if t.ncys else "all")
    doc = "\n".join([
        f"### {t.name} — {b.name} ({b.dfe})", t.description or "", "",
        f"Returns the LA's corrected UPN, surname, forename, middle names, gender, date of birth and "
        f"address (F28) for {group} students to the school's SIMS 7 (connection `{b.conn_id}`): each "
        "field where an officer kept the LA's value on a conflict and the school's latest data still "
        "differs. The message goes to `raw.outbound_file`, each field to `results.returned_field`, the "
        "counts to `ops.task_log`. Every run sends what is still pending.",
    ])
    with _task_dag(spec, la, doc, timedelta(hours=1)) as dag:
        ReturnToSchoolOperator(task_id="return_to_school", task_display_name="Return to school",
                               outlets=assets.stage_outlets("return_to_school", b.dfe), conn_id=b.conn_id,
                               la_code=la.code, ncys=t.ncys, base_id=b.dfe, base_kind=b.kind, task_key=t.key,
                               data_filter=t.filter, migrated_on=b.migrated_on)
    return dag


def settings(la: La) -> dict:
    """The LA's typed settings as the operators' (serialisable) argument."""
    return la.settings.as_dict()


MAINTENANCE = (
    ("clear_conflicts", "30 5 * * *", "Clear Conflicts (F18): drop open conflicts where the LA's data now equals "
                                      "the school's, daily and whenever a run updates the conflicts or the LA's "
                                      "current child view (assets `b2b_conflicts`, `b2b_child_current`)."),
    ("delete_files", "45 5 * * *", "Delete Files (F18): purge stored school messages older than the LA's "
                                   "FILE_RETENTION_DAYS; parsed data and results stay, daily."),
    ("clear_cached_data", None, "Clear Cached Data (F18): flush the hash cache so the next imports process "
                                "every block. Manual: trigger with `{\"base_id\": \"8862001\"}` for one base."),
)


#: maintenance DAGs that also run when these assets are updated (data-aware scheduling)
MAINTENANCE_ASSETS = {"clear_conflicts": (assets.CONFLICTS, assets.CHILD_CURRENT)}


def _maintenance_schedule(action: str, schedule: str | None, tz: Any) -> Any:
    """Cron, or cron *or* the assets it depends on (a run when any of them is updated)."""
    if not schedule:
        return None
    cron = CronDataIntervalTimetable(schedule, timezone=tz)
    if action not in MAINTENANCE_ASSETS:
        return cron
    from airflow.sdk import AssetAny
    from airflow.timetables.assets import AssetOrTimeSchedule

    # the core timetable accepts the SDK's asset expression at runtime (serialised with the DAG)
    return AssetOrTimeSchedule(timetable=cron, assets=AssetAny(*MAINTENANCE_ASSETS[action]))  # type: ignore[arg-type]


def build_maintenance_dag(action: str, schedule: str | None, doc: str, la: La) -> DAG:
    import pendulum

    from b2b_operators.maintenance import MaintenanceOperator

    tz = pendulum.timezone(la.timezone)
    with DAG(
        dag_id=f"b2b__maintenance__{action}",
        description=doc.split(":")[0],
        schedule=_maintenance_schedule(action, schedule, tz),
        dag_display_name=f"Maintenance · {doc.split(' (')[0]}",
        start_date=pendulum.datetime(2026, 9, 1, tz=tz),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["b2b", "maintenance"],
        doc_md=f"### {doc.split(':')[0]}\n\n{doc}",
        params={"base_id": None} if action == "clear_cached_data" else {},
        is_paused_upon_creation=True,
    ) as dag:
        MaintenanceOperator(task_id=action, action=action, retention_days=la.settings.file_retention_days)
    return dag


def build_dags(catalogue: Catalogue, only_dag_id: str | None = None) -> dict[str, DAG]:
    """DAGs for every active (base, task) pair and the maintenance tasks, in sorted order;
    just one when Airflow asks for one."""
    dags = {}
    for action, schedule, doc in MAINTENANCE:
        if only_dag_id and only_dag_id != f"b2b__maintenance__{action}":
            continue
        dags[f"b2b__maintenance__{action}"] = build_maintenance_dag(action, schedule, doc, catalogue.la)
    from b2b_operators.la_dags import build_la_dags  # issue 10: the LA's records in, manual import

    dags.update(build_la_dags(catalogue.la, only_dag_id))
    for spec in catalogue.dag_specs(include_inactive=False):
        if only_dag_id and spec.dag_id != only_dag_id:
            continue
        build = build_dag if spec.task.direction == "export" else build_return_dag
        dags[spec.dag_id] = build(spec, catalogue.la)
    dags.update(build_report_dags(catalogue, only_dag_id))
    return dict(sorted(dags.items()))
