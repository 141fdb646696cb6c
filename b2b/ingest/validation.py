"""Validate data blocks with Great Expectations (GX Core 1.x) against the suites in
``include/schemas/expectations/`` (one JSON file per block type).

Each suite says how its block type becomes a table (one row per block, or one row
per item of a list such as SEN needs), which columns it needs, and its expectations.
Every expectation carries ``meta``: the anomaly ``rule`` name, the ``field`` it is
about, and a ``severity``: ``error`` makes the block invalid (not loaded; the
student's other blocks go on), ``warning`` only records the anomaly.

A few checks need more than GX's built-ins (the UPN check letter, age at the window
end); they are computed here as derived columns (the UPN check letter with the DfE's
arithmetic, python-stdnum for anything unusual and as the reference in a test) and
checked by GX like any other column.

A value GX cannot evaluate (GX raises on it) fails its expectation: an anomaly like any
other failing value, never a pass and never a stop of the run (``_gx_judge``).

A structural problem (a block that is not the shape its type requires, an unknown
block type) puts its whole file in suspense: :attr:`ValidationResult.suspended`.

Great Expectations and pandas are imported inside the functions: this module is
imported by operators at run time only, never while Airflow parses DAG files.
"""
from __future__ import annotations

import hashlib
import html
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from b2b import INCLUDE, gc_control
from b2b.blocks import BLOCK_TYPES
from b2b.context import RunContext, log_stage, log_stage_file, run_files
from b2b.errors import ValidationSetupError
from b2b.reconcile.attendance import change_problems
from b2b.upn import is_valid as upn_is_valid

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

SUITES_DIR = INCLUDE / "schemas" / "expectations"
SEVERITIES = ("error", "warning")


class StructuralError(ValidationSetupError):
    """The validation itself cannot run (a suite is missing or malformed)."""


@dataclass(frozen=True)
class Anomaly:
    file_id: int
    ordinal: int
    base_id: str
    student_guid: str
    block_type: str
    rule: str
    field: str
    value: str | None
    severity: str = "error"


@dataclass
class ExpectationOutcome:
    block_type: str
    expectation: str
    column: str
    rule: str
    severity: str
    checked: int
    failed: int


@dataclass
class ValidationResult:
    checked: int = 0
    anomalies: list[Anomaly] = field(default_factory=list)
    invalid_blocks: set[tuple[int, int]] = field(default_factory=set)  # (file_id, ordinal)
    suspended: dict[int, str] = field(default_factory=dict)  # file_id -> reason
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    report_path: Path | None = None

    def by_rule(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.anomalies:
            out[a.rule] = out.get(a.rule, 0) + 1
        return dict(sorted(out.items()))


# ------------------------------------------------------------------ suites
@cache
def load_suite(block_type: str, suites_dir: str | None = None) -> dict:
    path = Path(suites_dir or SUITES_DIR) / f"{block_type}.json"
    try:
        suite = json.loads(path.read_text())
    except FileNotFoundError:
        raise StructuralError(f"no expectation suite for block type {block_type!r} ({path})") from None
    except ValueError as exc:
        raise StructuralError(f"expectation suite {path.name} is not valid JSON: {exc}") from None
    problems = []
    for i, e in enumerate(suite.get("expectations", [])):
        meta = e.get("meta") or {}
        if not meta.get("rule") or not meta.get("field") or meta.get("severity") not in SEVERITIES:
            problems.append(f"expectation {i} ({e.get('type')}) needs meta.rule, meta.field and meta.severity")
        if "column" not in e.get("kwargs", {}):
            problems.append(f"expectation {i} ({e.get('type')}) has no kwargs.column")
    if suite.get("block_type") != block_type:
        problems.append(f"block_type is {suite.get('block_type')!r}, expected {block_type!r}")
    if problems:
        raise StructuralError(f"expectation suite {path.name}: " + "; ".join(problems))
    return suite


# ------------------------------------------------------------------ shaping blocks into tables
def _structure_problem(block: dict) -> str | None:
    """Why this block cannot be validated (its file goes to suspense), or None."""
    bt, content = block["block_type"], block["content"]
    if bt not in BLOCK_TYPES:
        return f"unknown block type {bt!r}"
    if not isinstance(content, dict):
        return f"{bt} block is not an object"
    if not block.get("student_guid"):
        return f"{bt} block without a student id"
    rows = load_suite(bt)["rows"]
    if rows != "block":
        items = content.get(rows, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return f"{bt} block: '{rows}' is not a list of objects"
    if bt == "attendance" and "changes" in content:
        ch = content["changes"]
        if not isinstance(ch, list) or not all(isinstance(c, dict) for c in ch):
            return "attendance block: 'changes' is not a list of objects"
    return None


def _age(dob: str | None, as_of: date) -> int | None:
    if not dob:
        return None
    try:
        d = date.fromisoformat(str(dob))
    except ValueError:
        return -1
    return as_of.year - d.year - ((as_of.month, as_of.day) < (d.month, d.day))


def _is_date(v: Any) -> bool | None:
    if v in (None, ""):
        return None
    try:
        date.fromisoformat(str(v))
    except ValueError:
        return False
    return True


class _Column:
    """One column of a block type's table, factorized: ``codes[row]`` indexes ``uniques``.

    Values are told apart by type and value (``1``, ``True``, ``1.0`` and ``'1'`` are four
    distinct values, as GX may judge them differently); NaN is None (pandas' notion).
    """

    __slots__ = ("codes", "keys", "uniques")

    def __init__(self, codes: Any, uniques: list) -> None:
        self.codes = codes  # one per row
        self.uniques = uniques
        self.keys: list | None = None  # verdict keys of the uniques, made on first use

    def value_keys(self) -> list:
        if self.keys is None:
            self.keys = [_distinct_key(v) for v in self.uniques]
        return self.keys


_PLAIN = (frozenset({str, type(None)}), frozenset({int, type(None)}), frozenset({bool, type(None)}))


def _factorize(values: list) -> _Column:
    types = frozenset(map(type, values))
    if any(types <= p for p in _PLAIN):  # one plain type (and None): equality tells the values apart
        index: dict = {}
        return _Column([index.setdefault(v, len(index)) for v in values], list(index))
    keyed: dict = {}
    uniques: list = []
    codes = []
    for v in values:
        v = _none_if_nan(v)
        k = _distinct_key(v)
        c = keyed.get(k)
        if c is None:
            c = keyed[k] = len(uniques)
            uniques.append(v)
        codes.append(c)
    return _Column(codes, uniques)


def _distinct_key(v: Any) -> Any:
    if isinstance(v, float) and v == 0 and str(v)[0] == "-":  # -0.0 == 0.0, but their text differs
        return ("float", "-0.0")
    return _value_key("", v)


def _derive(col: _Column, fn: Any) -> _Column:
    """A column computed value by value from another: ``fn`` runs once per distinct value."""
    derived = _factorize([fn(v) for v in col.uniques])
    to = derived.codes
    return _Column([to[c] for c in col.codes], derived.uniques)


def _frame(block_type: str, blocks: Sequence[dict], suite: dict, as_of: date,
           wanted: Iterable[str] | None = None) -> tuple[dict[str, _Column], list[int]]:
    """(column -> factorized values, row -> block index) for one block type: one row per block or list item.

    ``wanted``: the columns to build (default: all the suite's columns and the derived ones).
    """
    rows_of = suite["rows"]
    if rows_of == "block":
        items = [b["content"] for b in blocks]
        owner = list(range(len(items)))
    else:
        items, owner = [], []
        for bi, b in enumerate(blocks):
            lst = b["content"].get(rows_of, [])
            items.extend(lst)
            owner.extend([bi] * len(lst))
    want = set(suite["columns"]) | set(DERIVED.get(block_type, {})) if wanted is None else set(wanted)
    for k in list(want):
        if k in DERIVED.get(block_type, {}):
            want.add(DERIVED[block_type][k][0])
    columns: dict[str, _Column] = {}
    problems: list | None = None
    for k in sorted(want - set(DERIVED.get(block_type, {}))):
        if block_type == "attendance" and k == "change_codes":
            # the suite's derived column: the codes of the day's changes, in one string
            columns[k] = _factorize([("".join(str(ch.get("code") or "") for ch in c["changes"])
                                      if "changes" in c else None) for c in items])
        elif block_type == "attendance" and k in CHANGE_FIELDS:
            # the suite's derived columns: what is wrong with the changes' dates, sessions, codes
            if problems is None:
                problems = [change_problems(c["changes"], c.get("academic_year"), as_of) if "changes" in c
                            else None for c in items]
            columns[k] = _factorize([p and p[CHANGE_FIELDS[k]] for p in problems])
        else:
            columns[k] = _factorize([it.get(k) for it in items])
    for k, (source, fn) in DERIVED.get(block_type, {}).items():
        if k in want and items:
            columns[k] = _derive(columns[source], lambda v, fn=fn: fn(v, as_of))
    return columns, owner


#: attendance's derived columns of what is wrong with its changes (the field of a change each is about)
CHANGE_FIELDS = {"change_date_problem": "date", "change_session_problem": "session",
                 "change_code_problem": "code"}


def _upn_ok(u: Any, _as_of: date) -> bool | None:
    """Whether a UPN is well formed with the right check letter (:func:`b2b.upn.is_valid`)."""
    return upn_is_valid(u)


#: derived columns: name -> (source column, function of (value, as_of)), computed per distinct value
DERIVED: dict[str, dict[str, tuple[str, Any]]] = {
    "student": {"upn_check_ok": ("upn", _upn_ok),
                "dob_age": ("dob", lambda d, as_of: _age(d, as_of)),
                "start_date_ok": ("start_date", lambda v, _as_of: _is_date(v))},
}


def _none_if_nan(v: Any) -> Any:
    """pandas' notion of a missing value, as the DataFrame path had it: NaN is None."""
    return None if isinstance(v, float) and v != v else v


# ------------------------------------------------------------------ GX
# Every expectation in the suites is a column map expectation: its verdict on a row depends
# on that row's value only. So a run's rows are not each sent to GX: each expectation's
# *distinct* values are, and GX's verdict on a value is remembered for the life of the
# process (keyed by the expectation's full configuration, so an edited suite starts afresh).
# Only values GX has not yet judged go to GX, all expectations of a run in ONE batch on ONE
# context; a run whose values are all known makes no GX call at all. Each column is factorized
# once (``_Column``): verdicts are looked up per distinct value and mapped back to rows by code,
# and only a column with some failing value is walked row by row to build anomalies. The
# anomalies are exactly those of one GX pass over every row (tests/test_validation*.py).
# A value GX raises on (text where a between-expectation compares numbers, a JSON object in a
# regex or set column) fails its expectation, for that value only: see ``_gx_judge``.
# The validate stage also keeps the verdicts in ``ops.gx_verdict`` (digests only, no values):
# a new task process (each Airflow task is one) then imports GX only for values never judged.
ROW_WISE = frozenset({"expect_column_values_to_not_be_null", "expect_column_values_to_be_in_set",
                      "expect_column_values_to_match_regex", "expect_column_values_to_be_between",
                      "expect_column_values_to_not_match_regex", "expect_column_values_to_not_be_in_set",
                      "expect_column_values_to_be_null"})
# expectations whose verdict depends only on whether the value is missing (after the None
# normalisation above): one representative of each class is enough
NULLNESS = frozenset({"expect_column_values_to_not_be_null", "expect_column_values_to_be_null"})
VERDICT_CACHE_MAX = 1_000_000
PROBE_OVER = 4  # a raising group of one type larger than this is probed with one value first (_gx_judge)  # remembered values per process, all expectations together

_verdicts: dict[str, dict] = {}  # expectation key -> {value key: failed}
_verdict_count = 0


def _expectation_key(block_type: str, e: dict) -> str:
    return block_type + ":" + json.dumps({k: e[k] for k in ("type", "kwargs")}, sort_keys=True, default=str)


@cache
def _expectation_digest(key: str) -> str:
    from importlib.metadata import version

    return hashlib.sha256(f"{version('great_expectations')}|{key}".encode()).hexdigest()[:32]


def _value_digest(vk: Any) -> str:
    return hashlib.sha256(repr(vk).encode()).hexdigest()[:32]


VERDICT_KEEP_DAYS = 35


def _stored_verdicts(conn: Connection, pending: list) -> list:
    """Fill the process memo from ``ops.gx_verdict``; return what is still unjudged."""
    eds, vds, where = [], [], []
    for i, (_bt, key, _e, vals) in enumerate(pending):
        ed = _expectation_digest(key)
        for j, (vk, _v) in enumerate(vals):
            eds.append(ed)
            vds.append(_value_digest(vk))
            where.append((i, j))
    found = {(r[0], r[1]): r[2] for r in conn.execute(
        """SELECT v.expectation, v.value_key, v.failed
             FROM ops.gx_verdict v JOIN unnest(%s::text[], %s::text[]) AS x(e, k)
               ON v.expectation = x.e AND v.value_key = x.k""", (eds, vds))}
    if not found:
        return pending
    rest: dict[int, list] = {}
    for (i, j), ed, vd in zip(where, eds, vds, strict=True):
        _bt, key, _e, vals = pending[i]
        if (ed, vd) in found:
            _verdicts.setdefault(key, {})[vals[j][0]] = found[(ed, vd)]
        else:
            rest.setdefault(i, []).append(vals[j])
    return [(bt, key, e, rest[i]) for i, (bt, key, e, _vals) in enumerate(pending) if i in rest]


def _store_verdicts(conn: Connection, judged: list) -> None:
    """Keep GX's new verdicts (digests only); prune those unused for VERDICT_KEEP_DAYS."""
    rows: set[tuple[str, str, bool]] = set()
    for _bt, key, _e, vals in judged:
        ed = _expectation_digest(key)
        memo = _verdicts[key]
        rows.update((ed, _value_digest(vk), memo[vk]) for vk, _v in vals)
    # in key order: two runs storing the same new values lock them in the same order (no deadlock)
    eds, vds, failed = zip(*sorted(rows), strict=True) if rows else ((), (), ())
    conn.execute("""INSERT INTO ops.gx_verdict (expectation, value_key, failed)
                    SELECT * FROM unnest(%s::text[], %s::text[], %s::boolean[])
                    ON CONFLICT (expectation, value_key) DO UPDATE SET seen = current_date""",
                 (list(eds), list(vds), list(failed)))
    # pruning never waits for another run: rows another transaction holds are left for later
    conn.execute("""DELETE FROM ops.gx_verdict WHERE ctid IN (
                        SELECT ctid FROM ops.gx_verdict WHERE seen < current_date - %s
                           FOR UPDATE SKIP LOCKED)""", (VERDICT_KEEP_DAYS,))


def _value_key(etype: str, v: Any) -> Any:
    """How GX's verdict on ``v`` is remembered: by type and value (so 1, True and '1' differ)."""
    if etype in NULLNESS:
        return v is None
    try:
        hash(v)
        return (type(v).__name__, v)
    except TypeError:  # a list or object where a scalar belongs: judged by its JSON form
        return ("json", json.dumps(v, sort_keys=True, default=str))


@cache
def _gx() -> Any:
    """One ephemeral GX context per process, with one pandas batch definition reused by every run."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # in memory, no temporary docs site (our own HTML report is written instead), no progress bars
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                               progress_bars=ProgressBarsConfig(globally=False))
    ctx = gx.get_context(mode="ephemeral", project_config=config)
    return ctx.data_sources.add_pandas("b2b_blocks").add_dataframe_asset("values") \
        .add_batch_definition_whole_dataframe("novel")


def _gx_judge(pending: list[tuple[str, str, dict, list]]) -> None:
    """Ask GX about values not judged yet; remember each verdict.

    ``pending``: (block_type, expectation key, expectation, [(value key, value), ...]).

    All expectations go in one batch. When GX raises on an expectation (at the top of its
    result, or nested under one of its metrics, where GX reports an error inside a metric),
    it has judged none of that batch's values, which are then judged again in smaller groups
    (all of a round's groups in one batch): first one group per Python type; a group of one
    type that still raises is split in halves, down to single values. A value on which GX
    raises on its own is one GX cannot evaluate: the expectation FAILS for that value only,
    and the others get their own verdicts, whatever the rows' order.

    GX costs tens of milliseconds per expectation, and halving costs about two expectations
    per raising value per level: so a group of more than ``PROBE_OVER`` values of one type
    that raises is first probed with one of its values (the least by value key, so not by
    row order) alone. When that one raises too, GX cannot take values of that type for this
    expectation (text where a between compares numbers, an object in a set or regex column:
    GX's raising depends on the type), and the whole group fails; when it does not, the group
    is halved as before.
    """
    global _verdict_count
    failed: dict[int, set[int]] = {i: set() for i in range(len(pending))}
    # a group: (pending index, value indexes, state: "mixed" | "typed" | "halve" | ("probe", the group probed))
    groups: list[tuple[int, list[int], Any]] = [(i, list(range(len(vals))), "mixed")
                                                for i, (*_, vals) in enumerate(pending)]
    while groups:
        again: list[tuple[int, list[int], Any]] = []
        raised = _gx_batch(pending, [(i, idx) for i, idx, _state in groups], failed)
        for g, (i, idx, state) in enumerate(groups):
            vals = pending[i][3]
            if isinstance(state, tuple):  # a probe: one value of a group of one type that raised
                if g in raised:  # it raised alone too: GX cannot take values of that type here
                    failed[i].update(state[1])
                    _log_raised(pending[i][2], len(state[1]))
                else:
                    half = len(state[1]) // 2
                    again += [(i, state[1][:half], "halve"), (i, state[1][half:], "halve")]
            elif g not in raised:
                continue
            elif len(idx) == 1:
                failed[i].add(idx[0])  # GX raises on this value alone: it cannot pass the expectation
                _log_raised(pending[i][2], 1)
            elif state == "mixed" and len(types := {type(vals[j][1]) for j in idx}) > 1:
                again += [(i, [j for j in idx if type(vals[j][1]) is t], "typed")
                          for t in sorted(types, key=lambda t: t.__name__)]
            elif state != "halve" and len(idx) > PROBE_OVER:
                probe = min(idx, key=lambda j: repr(vals[j][0]))
                again.append((i, [probe], ("probe", idx)))
            else:
                half = len(idx) // 2
                again += [(i, idx[:half], "halve"), (i, idx[half:], "halve")]
        groups = again
    if _verdict_count > VERDICT_CACHE_MAX:
        _verdicts.clear()
        _verdict_count = 0
    for i, (_bt, key, _e, vals) in enumerate(pending):
        memo = _verdicts.setdefault(key, {})
        bad = failed[i]
        for r, (vk, _v) in enumerate(vals):
            memo[vk] = r in bad
        _verdict_count += len(vals)


def _gx_batch(pending: list, groups: list[tuple[int, list[int]]], failed: dict[int, set[int]]) -> set[int]:
    """One GX validation: each group (pending index, value indexes) as a column; failing values
    are added to ``failed``. Returns the indexes of the groups on which GX raised (none of their
    values judged)."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    length = max(len(idx) for _i, idx in groups)
    data: dict[str, list] = {}
    suite = gx.ExpectationSuite(name="b2b_novel_values")
    for g, (i, idx) in enumerate(groups):
        e, vals = pending[i][2], pending[i][3]
        col = f"e{g}"
        # padded with its own first value: a repeated value gets the same verdict
        data[col] = [vals[j][1] for j in idx] + [vals[idx[0]][1]] * (length - len(idx))
        suite.add_expectation_configuration(ExpectationConfiguration(
            type=e["type"], kwargs=dict(e["kwargs"], column=col), meta={"g": g}))
    df = pd.DataFrame(data, dtype=object)
    df["_row"] = range(length)
    res = _gx().get_batch(batch_parameters={"dataframe": df}).validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})
    raised = set()
    judged = set()
    for er in res.results:
        g = er.expectation_config.meta["g"]
        judged.add(g)
        i, idx = groups[g]
        if _raised(er.exception_info):
            raised.add(g)
            continue
        for r in er.result.get("unexpected_index_list") or []:
            if int(r["_row"]) < len(idx):
                failed[i].add(idx[int(r["_row"])])
    if len(judged) != len(groups):
        raise StructuralError(f"Great Expectations returned {len(judged)} results for {len(groups)} expectations")
    return raised


def _log_raised(e: dict, n: int) -> None:
    log.info("validate: %s on %s raised on %d value(s) alone; counted as failing", e["type"],
             e["kwargs"]["column"], n)


def _raised(info: Any) -> bool:
    """Whether GX raised while judging an expectation: at the top of ``exception_info``, or nested
    under a metric's id (how GX reports an error inside a metric, with the top level looking clean)."""
    if not info:
        return False
    return any(isinstance(x, dict) and x.get("raised_exception") for x in (info, *info.values()))


def validate_blocks(blocks: Iterable[dict], *, run_label: str, report_dir: Path | None = None,
                    as_of: date | None = None, verdicts: Any = None) -> ValidationResult:
    """Validate blocks (dicts with file_id, ordinal, base_id, block_type, student_guid, content).

    Returns anomalies, the blocks made invalid by error-severity failures, files to
    suspend for structural problems, and the path of an HTML report (no personal values).
    ``verdicts``: a connection whose ``ops.gx_verdict`` keeps GX's verdicts across processes.
    """
    with gc_control.paused():  # (acyclic JSON data: see b2b.gc_control)
        return _validate_blocks(blocks, run_label=run_label, report_dir=report_dir, as_of=as_of, verdicts=verdicts)


def _validate_blocks(blocks: Iterable[dict], *, run_label: str, report_dir: Path | None, as_of: date | None,
                     verdicts: Any) -> ValidationResult:
    as_of = as_of or datetime.now(UTC).date()
    result = ValidationResult()
    by_type: dict[str, list[dict]] = {}
    blocks = blocks if isinstance(blocks, list) else list(blocks)
    for b in blocks:
        problem = _structure_problem(b)
        if problem:
            result.suspended.setdefault(b["file_id"], f"block {b['ordinal']}: {problem}")
    suspended = result.suspended
    for b in blocks:
        if b["file_id"] not in suspended:
            by_type.setdefault(b["block_type"], []).append(b)
    result.checked = sum(len(v) for v in by_type.values())
    frames = {}
    pending = []
    for bt in sorted(by_type):
        suite = load_suite(bt)
        plan = _plan(bt)
        columns, owner = _frame(bt, by_type[bt], suite, as_of, plan["wanted"])
        if not len(owner):
            continue
        frames[bt] = (plan, columns, owner)
        for key, e in plan["expectations"]:
            memo = _verdicts.get(key, {})
            col = columns[e["kwargs"]["column"]]
            if e["type"] in NULLNESS:  # one representative of "missing" and one of "present"
                present = next((v for v in col.uniques if v is not None), None)
                novel = [(k, v) for k, v, there in ((True, None, any(v is None for v in col.uniques)),
                                                    (False, present, present is not None))
                         if there and k not in memo]
            else:
                novel = [(k, v) for k, v in zip(col.value_keys(), col.uniques, strict=True) if k not in memo]
            if novel:
                pending.append((bt, key, e, novel))
    if pending and verdicts is not None:
        pending = _stored_verdicts(verdicts, pending)
    if pending:
        _gx_judge(pending)
        if verdicts is not None:
            _store_verdicts(verdicts, pending)
    for bt, (plan, columns, owner) in frames.items():
        _collect(bt, by_type[bt], plan, columns, owner, result)
    if report_dir is not None:
        result.report_path = write_report(result, run_label, Path(report_dir))
    return result


@cache
def _plan(block_type: str) -> dict:
    """A block type's expectations with their verdict keys, and the columns they need."""
    suite = load_suite(block_type)
    expectations = []
    wanted = set()
    derived = DERIVED.get(block_type, {})
    for e in suite["expectations"]:
        if e["type"] not in ROW_WISE:
            raise StructuralError(f"suite {suite['name']}: {e['type']} is not a column map expectation "
                                  "(the suites may use only row-wise expectations)")
        expectations.append((_expectation_key(block_type, e), e))
        wanted.add(e["kwargs"]["column"])
        if e["meta"]["field"] in suite["columns"] or e["meta"]["field"] in derived:
            wanted.add(e["meta"]["field"])
    return {"expectations": expectations, "wanted": frozenset(wanted)}


def _collect(block_type: str, blocks: list[dict], plan: dict, columns: dict[str, _Column], owner: list[int],
             result: ValidationResult) -> None:
    """Anomalies and invalid blocks of one block type, from GX's verdicts on its values."""
    for key, e in plan["expectations"]:
        meta, column, etype = e["meta"], e["kwargs"]["column"], e["type"]
        memo = _verdicts[key]
        col = columns[column]
        keys = [u is None for u in col.uniques] if etype in NULLNESS else col.value_keys()
        # a column whose every distinct value passed costs no more than this line
        bad = [memo[k] for k in keys]
        failed_rows = [r for r, c in enumerate(col.codes) if bad[c]] if any(bad) else []
        result.outcomes.append(ExpectationOutcome(block_type, etype, column, meta["rule"], meta["severity"],
                                                  len(col.codes), len(failed_rows)))
        if not len(failed_rows):
            continue
        shown = columns.get(meta["field"], col)
        error = meta["severity"] == "error"
        seen = set()
        for r in failed_rows:
            bi = owner[r]
            v = shown.uniques[shown.codes[r]]
            dedupe = (bi, _hashable(v))
            if dedupe in seen:  # the same value failing twice in one block is one anomaly
                continue
            seen.add(dedupe)
            b = blocks[bi]
            result.anomalies.append(Anomaly(b["file_id"], b["ordinal"], b["base_id"], b["student_guid"],
                                            block_type, meta["rule"], meta["field"],
                                            None if v is None else str(v), meta["severity"]))
            if error:
                result.invalid_blocks.add((b["file_id"], b["ordinal"]))


def _hashable(v: Any) -> Any:
    """``v`` itself (compared by equality), or its JSON form when it is a list or an object."""
    try:
        hash(v)
        return v
    except TypeError:
        return ("json", json.dumps(v, sort_keys=True, default=str))


# ------------------------------------------------------------------ report
def write_report(result: ValidationResult, run_label: str, report_dir: Path) -> Path:
    """A self-contained HTML page: per expectation, rows checked and failed; no personal values."""
    report_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_label)
    path = report_dir / f"{safe}.html"
    e = html.escape
    rows = "".join(
        f"<tr class='{'fail' if o.failed else 'ok'}'><td>{e(o.block_type)}</td><td>{e(o.rule)}</td>"
        f"<td>{e(o.column)}</td><td>{e(o.expectation)}</td><td>{e(o.severity)}</td>"
        f"<td>{o.checked}</td><td>{o.failed}</td></tr>" for o in result.outcomes)
    susp = "".join(f"<li>file {fid}: {e(reason)}</li>" for fid, reason in sorted(result.suspended.items()))
    by_rule = "".join(f"<li>{e(k)}: {v}</li>" for k, v in result.by_rule().items())
    sample = "".join(
        f"<tr><td>{a.file_id}</td><td>{a.ordinal}</td><td>{e(a.base_id)}</td><td>{e(a.student_guid)}</td>"
        f"<td>{e(a.block_type)}</td><td>{e(a.rule)}</td><td>{e(a.field)}</td></tr>" for a in result.anomalies[:500])
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>B2B validation {e(run_label)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:2px 6px}}tr.fail td{{background:#fde2e2}}tr.ok td{{background:#e6f4ea}}</style></head><body>
<h1>Validation report: {e(run_label)}</h1>
<p>Generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC with Great Expectations. Blocks checked:
{result.checked}. Anomalies: {len(result.anomalies)}. Blocks not loaded (error severity):
{len(result.invalid_blocks)}. Files in suspense: {len(result.suspended)}.</p>
<p>Values are not shown here; they are in <code>results.anomaly</code> for authorised analysts.</p>
<h2>Files in suspense</h2><ul>{susp or '<li>none</li>'}</ul>
<h2>Anomalies by rule</h2><ul>{by_rule or '<li>none</li>'}</ul>
<h2>Expectations</h2><table><tr><th>block</th><th>rule</th><th>column</th><th>expectation</th>
<th>severity</th><th>rows checked</th><th>rows failed</th></tr>{rows}</table>
<h2>Anomalies (first 500)</h2><table><tr><th>file</th><th>block</th><th>base</th><th>student</th><th>type</th>
<th>rule</th><th>field</th></tr>{sample}</table></body></html>
"""
    path.write_text(doc)
    return path


# ------------------------------------------------------------------ the validate stage
def validate(conn: Connection, ctx: RunContext, report_dir: Any) -> dict:
    """Run the expectation suites (``b2b.validation``, Great Expectations) on the run's new blocks.

    Row-level failures become ``results.anomaly`` rows and their blocks are marked
    ``invalid`` (not loaded); the student's other blocks and the rest of the file go on.
    A structural failure (unknown block type, missing mandatory section) puts the file(s)
    in suspense with the reason in the task log. Writes an HTML report; its path is logged.
    """
    with gc_control.paused():  # the run's blocks are freed (by reference counting) before collection resumes
        return _validate_run(conn, ctx, report_dir)


def _validate_run(conn: Connection, ctx: RunContext, report_dir: Any) -> dict:
    # One pipeline: statements whose result is not read go out with the next one that is, so a
    # run costs four round trips (files; blocks; stored verdicts; commit), not one per statement.
    with conn.pipeline(), conn.transaction():
        files = run_files(conn, ctx)
        conn.execute("DELETE FROM results.anomaly WHERE file_id = ANY(%s)", (files,))
        conn.execute("""UPDATE raw.inbound_block SET disposition = 'pending'
                        WHERE file_id = ANY(%s) AND disposition = 'invalid'""", (files,))
        from b2b.ingest.extract import reject_flagged  # pupils sent twice / failing the XSD (issue 9)

        reject_flagged(conn, files)
        pending = conn.execute(_pending_blocks_sql(), (files,))
        missing = _missing_core(conn, ctx, files)
        decode = _json_decoder()
        blocks = [dict(file_id=r[0], ordinal=r[1], base_id=r[2], block_type=r[3], student_guid=r[4],
                       content=decode(r[5])) for r in pending.fetchall() if r[0] not in missing]
        label = f"{ctx.dag_id}__{ctx.window_end:%Y%m%dT%H%M%S}"
        result = validate_blocks(blocks, run_label=label, report_dir=Path(report_dir), as_of=ctx.window_end.date(),
                                 verdicts=conn)
        result.suspended.update(missing)
        for file_id, reason in sorted(result.suspended.items()):
            conn.execute("UPDATE raw.inbound_file SET status = 'suspense', error = %s WHERE file_id = %s",
                         (f"validation: {reason}", file_id))
            log_stage_file(conn, ctx, "validate", file_id, {"suspended": 1},
                           f"validate: file {file_id} put in suspense: {reason}", level="error")
        if result.anomalies:
            conn.execute(
                """INSERT INTO results.anomaly (file_id, ordinal, base_id, student_guid, block_type, rule, field,
                                                value, severity)
                   SELECT * FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[], %s::text[],
                                        %s::text[], %s::text[], %s::text[])""",
                [list(c) for c in zip(*((a.file_id, a.ordinal, a.base_id, a.student_guid, a.block_type, a.rule,
                                         a.field, a.value, a.severity) for a in result.anomalies), strict=True)])
        invalid = sorted(result.invalid_blocks)
        if invalid:
            conn.execute(
                """UPDATE raw.inbound_block b SET disposition = 'invalid'
                     FROM unnest(%s::bigint[], %s::int[]) AS x(file_id, ordinal)
                    WHERE b.file_id = x.file_id AND b.ordinal = x.ordinal""",
                ([i[0] for i in invalid], [i[1] for i in invalid]))
        counts = {"checked": result.checked, "anomalies": len(result.anomalies), "invalid_blocks": len(invalid),
                  "suspended_files": len(result.suspended), "by_rule": result.by_rule(),
                  "report": str(result.report_path)}
        log_stage(conn, ctx, "validate", counts,
                  f"validate: {result.checked} blocks checked, {len(result.anomalies)} anomalies, "
                  f"{len(invalid)} blocks not loaded, {len(result.suspended)} files in suspense; "
                  f"report {result.report_path}",
                  level="error" if result.suspended else "warning" if result.anomalies else "info")
    return counts


@cache
def _json_decoder() -> Any:
    """msgspec's JSON decoder (to the same dicts, lists and scalars as ``json.loads``, three times
    faster); ``json.loads`` for what msgspec refuses (a number beyond a float's range)."""
    import msgspec

    fast, refused = msgspec.json.Decoder().decode, msgspec.MsgspecError

    def decode(text: str) -> Any:
        try:
            return fast(text)
        except refused:
            return json.loads(text)

    return decode


@cache
def _pending_blocks_sql() -> str:
    """The run's pending blocks, each block's content projected IN SQL to what the suites read.

    Decoding whole blocks in Python cost a fifth of the stage (a contacts block carries names,
    e-mails, telephones and addresses; only each contact's relationship is validated). Postgres
    sends, per block type, an object with the suite's columns only (a missing key and JSON null
    are the same to validation), keeping what :func:`_structure_problem` looks at: content that
    is not an object, a row list that is not a list (or is absent), items that are not objects,
    and attendance ``changes``. The content comes as text, decoded by :func:`_json_decoder`.
    tests/test_validation_projection.py checks validate_blocks gives
    the same result on projected and whole blocks.
    """
    from psycopg import sql

    def obj(src: sql.Composable, keys: Iterable[str]) -> sql.Composable:
        return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
            sql.SQL("{}, {}->{}").format(sql.Literal(k), src, sql.Literal(k)) for k in sorted(keys)))

    def items(src: sql.Composable, key: str, keys: Iterable[str]) -> sql.Composable:
        """``src`` with only ``key``, whose list items keep only ``keys`` (anything else kept as is)."""
        lst = sql.SQL("{}->{}").format(src, sql.Literal(key))
        return sql.SQL(
            "CASE WHEN NOT {src} ? {key} THEN '{{}}'::jsonb WHEN jsonb_typeof({lst}) <> 'array' "
            "THEN jsonb_build_object({key}, {lst}) ELSE jsonb_build_object({key}, (SELECT coalesce(jsonb_agg("
            "CASE WHEN jsonb_typeof(x) = 'object' THEN {item} ELSE x END ORDER BY o), '[]'::jsonb) "
            "FROM jsonb_array_elements({lst}) WITH ORDINALITY AS t(x, o))) END").format(
            src=src, key=sql.Literal(key), lst=lst, item=obj(sql.SQL("x"), keys))

    content = sql.SQL("content")
    cases = []
    for bt in BLOCK_TYPES:
        suite, derived = load_suite(bt), DERIVED.get(bt, {})
        keys = set(_plan(bt)["wanted"])
        keys |= {derived[k][0] for k in keys if k in derived}
        keys -= set(derived)
        projected: sql.Composable
        if bt == "attendance":  # change_codes and the change_*_problem columns are made from the changes
            keys -= {"change_codes", *CHANGE_FIELDS}
            keys.add("academic_year")  # the year the changes' dates must lie in
            projected = sql.SQL("{} || {}").format(obj(content, keys),
                                                   items(content, "changes", ["code", "date", "session"]))
        elif suite["rows"] == "block":
            projected = obj(content, keys)
        else:
            projected = items(content, suite["rows"], keys)
        cases.append(sql.SQL("WHEN {} THEN {}").format(sql.Literal(bt), projected))
    return sql.SQL(
        """SELECT file_id, ordinal, base_id, block_type, student_guid,
                  (CASE WHEN jsonb_typeof(content) <> 'object' THEN content
                        ELSE CASE block_type {} ELSE content END END)::text
             FROM raw.inbound_block WHERE file_id = ANY(%s) AND disposition = 'pending'
            ORDER BY file_id, ordinal""").format(sql.SQL(" ").join(cases)).as_string()  # rendered once


def _missing_core(conn: Connection, ctx: RunContext, files: list[int]) -> dict[int, str]:
    """SIMS 7 files where a pupil lacks its mandatory core block (all but changed data send it).

    Checked over every block of the file, skipped ones included. Returns {file_id: reason}.
    """
    if ctx.source != "sims7" or ctx.data_filter == "changed_data":
        return {}
    rows = conn.execute(
        """SELECT file_id, count(*) FROM (
               SELECT file_id, student_guid FROM raw.inbound_block WHERE file_id = ANY(%s)
                GROUP BY file_id, student_guid HAVING NOT bool_or(block_type = 'student')) x
            GROUP BY file_id""", (files,)).fetchall()
    return {fid: f"{n} pupil(s) without the mandatory StudentCore section ({ctx.data_filter} message)"
            for fid, n in rows}


