"""The task catalogue: the LA's bases (schools) and their scheduled tasks (F21–F26, F1–F5, F10).

A YAML file (``include/catalogue/demo.yaml`` by default, or ``$B2B_CATALOGUE``),
validated by ``include/schemas/catalogue.schema.json`` plus the rules below, turned into
frozen dataclasses. ``dag_specs()`` gives one :class:`DagSpec` per (base, task) pair.

Imported at DAG-parse time: keep module import cheap (jsonschema is imported only when
validating, and the DAG file loads with ``validate=False``; the catalogue is cached by
path and modification time).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from b2b import INCLUDE, PROJECT_ROOT
from b2b.config.settings import Settings
from b2b.errors import ConfigError

SCHEMA_PATH = INCLUDE / "schemas" / "catalogue.schema.json"
DEFAULT_PATH = INCLUDE / "catalogue" / "demo.yaml"
SIMS7_ONLY_ATTENDANCE = {"all_current", "unauthorised_current", "absences_current", "all_previous"}
_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?LW#]+$")


class CatalogueError(ConfigError):
    """Every problem found in a catalogue, one per line."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = list(problems)
        head = f"catalogue {path}: " if path else "catalogue: "
        super().__init__(head + f"{len(self.problems)} problem(s)\n" + "\n".join(f"- {p}" for p in self.problems))


@dataclass(frozen=True)
class La:
    """The LA: its code, name, time zone and its typed settings (``b2b.config.settings``)."""

    code: str
    name: str
    timezone: str = "Europe/London"
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class Base:
    dfe: str
    name: str
    kind: str  # sims7 | sims_primary
    conn_id: str
    migrated_on: date | None = None
    lockdown: bool = False
    enabled: bool = True  # F40: a switched-off base keeps its tasks; its DAGs refuse to run


@dataclass(frozen=True)
class Task:
    key: str
    name: str
    direction: str
    filter: str
    attendance: str | None
    months: int | None
    group_type: str
    ncys: tuple[str, ...] | None  # None = all
    hierarchies: tuple[str, ...]
    schedule: str
    start_date: date
    catchup: bool
    active: bool
    lockdown: bool
    bases: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class DagSpec:
    dag_id: str
    base: Base
    task: Task
    active: bool
    inactive_reason: str | None = None


@dataclass
class Catalogue:
    la: La
    bases: dict[str, Base]
    tasks: tuple[Task, ...]
    warnings: list[str] = field(default_factory=list)
    path: str | None = None

    def base(self, dfe: str) -> Base:
        return self.bases[dfe]

    def dag_specs(self, include_inactive: bool = True) -> list[DagSpec]:
        specs = []
        for t in self.tasks:
            for dfe in t.bases:
                b = self.bases[dfe]
                reason = inactive_reason(b, t)
                if reason is None and not t.active:
                    reason = "task marked inactive"
                if reason is None or include_inactive:
                    specs.append(DagSpec(f"b2b__{dfe}__{t.key}", b, t, reason is None, reason))
        return sorted(specs, key=lambda s: s.dag_id)

    def dag_spec(self, dag_id: str) -> DagSpec | None:
        return next((s for s in self.dag_specs() if s.dag_id == dag_id), None)


def inactive_reason(base: Base, task: Task) -> str | None:
    """F3: on a SIMS Primary base, SIMS 7 attendance, attainment and two-way tasks are inactive."""
    if base.kind != "sims_primary":
        return None
    if task.direction == "import":
        return "F3: two-way (import to school) tasks are inactive after migration to SIMS Primary"
    if task.filter == "attainment":
        return "F3: attainment tasks are inactive after migration to SIMS Primary"
    if task.filter == "attendance" and task.attendance in SIMS7_ONLY_ATTENDANCE:
        return "F3: SIMS 7 attendance tasks are inactive after migration to SIMS Primary"
    return None


# ------------------------------------------------------------------ loading
def _plain(value: Any) -> Any:
    """YAML dates -> ISO strings, so JSON Schema sees what a JSON catalogue would hold."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


#: the most values a catalogue may hold once YAML aliases are expanded (a 600-school
#: catalogue holds ~20,000): aliases of aliases ("billion laughs") refused before expanding
MAX_VALUES = 1_000_000


def _yaml_loader() -> Any:
    """The safe YAML loader (libyaml's when there), refusing a key given twice in one mapping:
    YAML keeps the last silently, and a task's second ``schedule:`` or a base's second
    ``dfe:`` replaced the first (a merge key's ``<<`` values may still be overridden)."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[valid-type, misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {str(key)[:60]!r} given twice in one mapping (first on line "
                                        f"{seen[key].line + 1}); YAML would keep only the last", key_node.start_mark)
                    seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep=deep)

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_yaml_map)
    return Loader


def _too_many_values(data: Any) -> str | None:
    """Why ``data`` cannot be expanded (too many values once aliases are expanded, an alias
    inside itself, nested too deeply), or None. Each shared list or mapping is counted once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (dict, list)):
            return 1
        k = id(v)
        if k in sizes:
            return sizes[k]
        if k in open_:
            raise ValueError("an alias refers to the list or mapping it is in")
        open_.add(k)
        n = 1 + sum(size(x) for x in (list(v) + list(v.values()) if isinstance(v, dict) else v))
        open_.discard(k)
        sizes[k] = n
        if n > MAX_VALUES:
            raise ValueError(f"over {MAX_VALUES:,} values once its aliases are expanded")
        return n

    try:
        size(data)
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply"
    return None


def read_raw(path: Path) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CatalogueError([f"not valid JSON ({exc})"], str(path)) from None
        except RecursionError:
            raise CatalogueError(["not valid JSON (nested too deeply)"], str(path)) from None
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:  # a syntax error: where it is, not a traceback (issue 9 item 10)
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise CatalogueError([f"{where}not valid YAML ({getattr(exc, 'problem', None) or type(exc).__name__})"],
                             str(path)) from None
    except RecursionError:
        raise CatalogueError(["not valid YAML (nested too deeply)"], str(path)) from None
    if not isinstance(data, dict):
        raise CatalogueError(["the file does not hold a mapping (version, la, bases, tasks)"], str(path))
    problem = _too_many_values(data)
    if problem:
        raise CatalogueError([f"not read: {problem}"], str(path))
    return _plain(data)


def schema_problems(data: dict) -> list[str]:
    import jsonschema

    base_pattern = jsonschema.Draft202012Validator.VALIDATORS["pattern"]

    def ecma_pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Any:
        # a schema's pattern is ECMA-262, whose '$' ends the text; Python's also matches before
        # a final line break, so a conn_id or DfE number pasted with its line break passed
        yield from base_pattern(validator, pattern, instance, schema)
        if (validator.is_type(instance, "string") and instance.endswith("\n") and pattern.endswith("$")
                and re.search(pattern, instance) and not re.search(pattern[:-1] + r"\Z", instance)):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r} (a line break at its end)")

    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": ecma_pattern})
    validator = cls(schema, format_checker=jsonschema.FormatChecker())
    problems = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        problems.append(f"{_where(data, list(err.absolute_path))}: {err.message}")
    return problems


def _where(data: dict, path: list) -> str:
    """'base 8862001 field kind' / "task 'x' (bases …) field 'months'" from a JSON path."""
    if len(path) >= 2 and path[0] == "bases" and isinstance(path[1], int):
        try:
            dfe = data["bases"][path[1]].get("dfe", f"#{path[1] + 1}")
        except (IndexError, AttributeError):
            dfe = f"#{path[1] + 1}"
        rest = ".".join(str(p) for p in path[2:])
        return f"base {dfe}" + (f": field '{rest}'" if rest else "")
    if len(path) >= 2 and path[0] == "tasks" and isinstance(path[1], int):
        try:
            t = data["tasks"][path[1]]
            label = f"task '{t.get('key', '#' + str(path[1] + 1))}' (bases {', '.join(map(str, t.get('bases') or []))})"
        except (IndexError, AttributeError):
            label = f"task #{path[1] + 1}"
        rest = ".".join(str(p) for p in path[2:])
        return label + (f": field '{rest}'" if rest else "")
    return "catalogue" + (f": field '{'.'.join(str(p) for p in path)}'" if path else "")


def _task_label(t: dict) -> str:
    return f"task '{t.get('key')}' (bases {', '.join(map(str, t.get('bases') or []))})"


def rule_problems(data: dict) -> tuple[list[str], list[str]]:
    """Checks JSON Schema cannot express. Returns (errors, warnings)."""
    errors: list[str] = []
    warnings: list[str] = []
    la_code = str(data.get("la", {}).get("code", ""))
    bases: dict[str, dict] = {}
    for b in data.get("bases", []):
        dfe = str(b.get("dfe"))
        if dfe in bases:
            errors.append(f"base {dfe}: duplicate DfE number")
        bases[dfe] = b
        if la_code and not dfe.startswith(la_code):
            errors.append(f"base {dfe}: field 'dfe': must start with the LA code {la_code}")
        if b.get("kind") == "sims_primary" and not b.get("migrated_on"):
            errors.append(f"base {dfe}: field 'migrated_on': required for a SIMS Primary base "
                          "(the migration date is the changed-data watermark, F5)")
        if b.get("kind") == "sims7" and b.get("migrated_on"):
            errors.append(f"base {dfe}: field 'migrated_on': only SIMS Primary bases have a migration date")
    keys: set[tuple[str, str]] = set()
    for t in data.get("tasks", []):
        label = _task_label(t)
        key = t.get("key")
        for d in t.get("bases", []):
            if (d, key) in keys:
                errors.append(f"{label}: field 'key': base {d} already has a task '{key}' (DAG ids must be unique)")
            keys.add((d, key))
        filt, att, months = t.get("filter"), t.get("attendance"), t.get("months")
        direction = t.get("direction", "export")
        group = t.get("group") or {"type": "ncy", "ncys": "all"}
        unknown = [d for d in t.get("bases", []) if d not in bases]
        for d in unknown:
            errors.append(f"{label}: field 'bases': unknown base {d}")
        kinds = {bases[d].get("kind") for d in t.get("bases", []) if d in bases}
        if len(kinds) > 1:
            errors.append(f"{label}: field 'bases': one task cannot group SIMS 7 and SIMS Primary bases (F4)")
        if filt == "attendance":
            if not att:
                errors.append(f"{label}: field 'attendance': required with filter attendance (F22)")
            if months is None:
                errors.append(f"{label}: field 'months': required with filter attendance (F24)")
            elif not 1 <= months <= 13:
                errors.append(f"{label}: field 'months': must be between 1 and 13, got {months} (F24)")
            if att == "changed" and kinds and kinds != {"sims_primary"}:
                errors.append(f"{label}: field 'attendance': 'changed' exists only for SIMS Primary bases (F2)")
        else:
            if att:
                errors.append(f"{label}: field 'attendance': only with filter attendance (F22)")
            if months is not None:
                errors.append(f"{label}: field 'months': only with filter attendance (F24)")
        if filt == "attainment" and not t.get("hierarchies"):
            errors.append(f"{label}: field 'hierarchies': attainment tasks need at least one aspect hierarchy (F19)")
        if filt != "attainment" and t.get("hierarchies"):
            errors.append(f"{label}: field 'hierarchies': only with filter attainment")
        if direction == "import" and (filt != "changed_data" or group.get("type") != "ncy"):
            errors.append(f"{label}: field 'filter': import-to-school tasks take Changed Data for an NCY group "
                          "only (F25)")
        if group.get("type") != "ncy" and "ncys" in group:
            errors.append(f"{label}: field 'group.ncys': only with group type ncy (F23)")
        sched = str(t.get("schedule", ""))
        if not all(_CRON_FIELD.match(p) for p in sched.split()) or len(sched.split()) != 5:
            errors.append(f"{label}: field 'schedule': not a 5-field cron expression: {sched!r}")
        else:
            try:
                from croniter import croniter

                if not croniter.is_valid(sched):
                    errors.append(f"{label}: field 'schedule': not a valid cron expression: {sched!r}")
                else:
                    try:  # a day that never comes (30 February): the scheduler could not plan a run
                        croniter(sched, datetime(2000, 1, 1)).get_next(datetime)
                    except Exception:  # croniter's CroniterBadDateError and kin
                        errors.append(f"{label}: field 'schedule': never fires (no such day): {sched!r}")
            except ImportError:  # pragma: no cover - croniter ships with Airflow
                pass
        sd = t.get("start_date")
        if sd and str(sd) < "2000-01-01":
            errors.append(f"{label}: field 'start_date': must be on or after 2000-01-01")
        for d in t.get("bases", []):
            if d in bases and not unknown:
                reason = inactive_reason(_base_from(bases[d]), _task_from(t))
                if reason:
                    warnings.append(f"{label}: inactive on base {d}: {reason}")
    return errors, warnings


def _date(v: Any) -> date | None:
    if v in (None, ""):
        return None
    return v if isinstance(v, date) else date.fromisoformat(str(v))


def _base_from(b: dict) -> Base:
    return Base(dfe=str(b["dfe"]), name=b["name"], kind=b["kind"], conn_id=b["conn_id"],
                migrated_on=_date(b.get("migrated_on")), lockdown=bool(b.get("lockdown", False)),
                enabled=bool(b.get("enabled", True)))


def _task_from(t: dict) -> Task:
    group = t.get("group") or {"type": "ncy", "ncys": "all"}
    ncys = group.get("ncys", "all")
    return Task(
        key=t["key"], name=t["name"], direction=t.get("direction", "export"), filter=t["filter"],
        attendance=t.get("attendance"), months=t.get("months"), group_type=group.get("type", "ncy"),
        ncys=None if ncys in (None, "all") else tuple(str(n) for n in ncys),
        hierarchies=tuple(t.get("hierarchies") or ()), schedule=t["schedule"],
        start_date=_date(t["start_date"]) or date(1970, 1, 1), catchup=bool(t.get("catchup", False)),
        active=bool(t.get("active", True)), lockdown=bool(t.get("lockdown", False)),
        bases=tuple(str(b) for b in t["bases"]), description=t.get("description", "").strip(),
    )


def build(data: dict, path: str | None = None) -> Catalogue:
    la = data["la"]
    settings = La(code=str(la["code"]), name=la["name"], timezone=la.get("timezone", "Europe/London"),
                  settings=Settings.from_mapping(la.get("settings")))
    bases = {str(b["dfe"]): _base_from(b) for b in data["bases"]}
    tasks = tuple(_task_from(t) for t in data["tasks"])
    return Catalogue(settings, bases, tasks, path=path)


def check_catalogue(path: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a catalogue file: JSON Schema first, then the rules."""
    path = Path(path or os.environ.get("B2B_CATALOGUE") or DEFAULT_PATH)
    try:
        data = read_raw(path)
    except CatalogueError as exc:
        return exc.problems, []
    except (OSError, ValueError) as exc:
        return [f"cannot read {path}: {exc}"], []
    errors = schema_problems(data)
    if errors:  # the rules assume the shape is right
        return errors, []
    return rule_problems(data)


_CACHE: dict[tuple[str, float, bool | str], Catalogue] = {}


def _stamp(path: Path) -> Path:
    """Where a successful validation of exactly this catalogue (and this schema and rule code)
    is remembered, so the DAG file validates a changed catalogue once and then parses cheaply."""
    import hashlib

    digest = hashlib.sha256()
    for part in (path.read_bytes(), SCHEMA_PATH.read_bytes(), Path(__file__).read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    home = Path(os.environ.get("B2B_HOME") or PROJECT_ROOT / ".b2b")
    return home / "cache" / f"catalogue-valid-{digest.hexdigest()[:32]}"


def load_catalogue(path: str | Path | None = None, *, validate: bool | str = True) -> Catalogue:
    """The catalogue at ``path`` ($B2B_CATALOGUE, else the demo), cached by path and mtime.

    ``validate``: True checks the schema and every rule and raises :class:`CatalogueError`
    naming base, task and field; ``"once"`` (the DAG file) does the same unless this very
    catalogue already passed (a stamp under ``$B2B_HOME/cache``), so parsing an unchanged
    catalogue imports no JSON Schema; False trusts the file (tests and benches only).
    """
    path = Path(path or os.environ.get("B2B_CATALOGUE") or DEFAULT_PATH)
    if not path.is_absolute():
        path = (PROJECT_ROOT / path) if not path.exists() else path.resolve()
    key = (str(path), path.stat().st_mtime, validate)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    data = read_raw(path)
    warnings: list[str] = []
    stamp = _stamp(path) if validate == "once" else None
    if stamp is not None and stamp.exists():
        validate = False
    if validate:
        errors = schema_problems(data)
        if not errors:
            errors, warnings = rule_problems(data)
        if errors:
            raise CatalogueError(errors, str(path))
        if stamp is not None:
            try:
                stamp.parent.mkdir(parents=True, exist_ok=True)
                stamp.write_text(str(path))
            except OSError:  # a read-only home: validate at every parse instead
                pass
    cat = build(data, str(path))
    cat.warnings = warnings
    _CACHE[key] = cat
    return cat


def main_check(path: str | None = None) -> int:
    """``b2b config check [PATH]``: print a summary or every problem; exit code 0/1."""
    shown = path or os.environ.get("B2B_CATALOGUE") or str(DEFAULT_PATH.relative_to(PROJECT_ROOT))
    errors, warnings = check_catalogue(path)
    if errors:
        print(f"catalogue {shown}: {len(errors)} problem(s)")
        for e in errors:
            print(f"  error: {e}")
        return 1
    cat = build(read_raw(Path(path or os.environ.get("B2B_CATALOGUE") or DEFAULT_PATH)))
    specs = cat.dag_specs()
    inactive = sum(not s.active for s in specs)
    for w in warnings:
        print(f"  warning: {w}")
    print(f"catalogue {shown}: {len(cat.bases)} bases, {len(cat.tasks)} tasks, {len(specs)} DAGs "
          f"({inactive} inactive) - OK")
    return 0


def ensure_enabled(base_id: str, path: str | Path | None = None) -> None:
    """F40: raise :class:`~b2b.errors.DisabledError` when the base is switched off in the
    catalogue (read now, so switching a base off takes effect at its next run)."""
    from b2b.errors import DisabledError

    base = load_catalogue(path, validate=False).bases.get(base_id)
    if base is not None and not base.enabled:
        raise DisabledError("the base is switched off in the catalogue (enabled: false); its tasks are kept "
                            "but do not run until it is switched on again", base=base_id)
