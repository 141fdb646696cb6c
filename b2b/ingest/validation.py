"""Validate data blocks with Great Expectations (GX Core 1.x) against the suites in
``include/schemas/expectations/`` (one JSON file per block type).

Each suite says how its block type becomes a table (one row per block, or one row
per item of a list such as SEN needs), which columns it needs, and its expectations.
Every expectation carries ``meta``: the anomaly ``rule`` name, the ``field`` it is
about, and a ``severity``: ``error`` makes the block invalid (not loaded; the
student's other blocks go on), ``warning`` only records the anomaly.

A few checks need more than GX's built-ins (the UPN check letter, age at the window
end); they are computed here as derived columns with a well-kept library
(python-stdnum) and checked by GX like any other column.

A structural problem (a block that is not the shape its type requires, an unknown
block type) puts its whole file in suspense: :attr:`ValidationResult.suspended`.

Great Expectations and pandas are imported inside the functions: this module is
imported by operators at run time only, never while Airflow parses DAG files.
"""
from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

from b2b import INCLUDE
from b2b.blocks import BLOCK_TYPES
from b2b.context import RunContext, log_stage, log_stage_file, run_files
from b2b.errors import ValidationSetupError

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


def _is_date(v) -> bool | None:
    if v in (None, ""):
        return None
    try:
        date.fromisoformat(str(v))
    except ValueError:
        return False
    return True


def _frame(block_type: str, blocks: Sequence[dict], suite: dict, as_of: date):
    """(DataFrame, row -> block index) for one block type."""
    import pandas as pd
    from stdnum.gb import upn as upn_mod

    cols = suite["columns"]
    rows_of = suite["rows"]
    records, owner = [], []
    for bi, b in enumerate(blocks):
        c = b["content"]
        items = [c] if rows_of == "block" else c.get(rows_of, [])
        for item in items:
            rec = {k: item.get(k) for k in cols}
            if block_type == "attendance":
                rec["change_codes"] = "".join(str(ch.get("code") or "") for ch in c.get("changes", [])) \
                    if "changes" in c else None
            records.append(rec)
            owner.append(bi)
    df = pd.DataFrame.from_records(records, columns=cols) if records else pd.DataFrame(columns=cols)
    df = df.astype(object).where(df.notna(), None)
    if block_type == "student" and len(df):
        df["upn_check_ok"] = [None if u in (None, "") else upn_mod.is_valid(str(u)) for u in df["upn"]]
        df["dob_age"] = [_age(d, as_of) for d in df["dob"]]
        df["start_date_ok"] = [_is_date(v) for v in df["start_date"]]
    df["_row"] = range(len(df))
    return df, owner


# ------------------------------------------------------------------ GX
def _gx_context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # in memory, no temporary docs site per run (our own HTML report is written instead), no progress bars
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                               progress_bars=ProgressBarsConfig(globally=False))
    return gx.get_context(mode="ephemeral", project_config=config)


def _gx_suite(suite: dict):
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    s = gx.ExpectationSuite(name=suite["name"])
    for e in suite["expectations"]:
        s.add_expectation_configuration(ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta=e["meta"]))
    return s


def validate_blocks(blocks: Iterable[dict], *, run_label: str, report_dir: Path | None = None,
                    as_of: date | None = None) -> ValidationResult:
    """Validate blocks (dicts with file_id, ordinal, base_id, block_type, student_guid, content).

    Returns anomalies, the blocks made invalid by error-severity failures, files to
    suspend for structural problems, and the path of an HTML report (no personal values).
    """
    as_of = as_of or datetime.now(UTC).date()
    result = ValidationResult()
    by_type: dict[str, list[dict]] = {}
    blocks = list(blocks)
    for b in blocks:
        problem = _structure_problem(b)
        if problem:
            result.suspended.setdefault(b["file_id"], f"block {b['ordinal']}: {problem}")
    for b in blocks:
        if b["file_id"] not in result.suspended:
            by_type.setdefault(b["block_type"], []).append(b)
    result.checked = sum(len(v) for v in by_type.values())
    if by_type:
        ctx = _gx_context()
        ds = ctx.data_sources.add_pandas("b2b_blocks")
        for bt in sorted(by_type):
            _validate_type(ds, bt, by_type[bt], as_of, result)
    if report_dir is not None:
        result.report_path = write_report(result, run_label, Path(report_dir))
    return result


def _validate_type(ds, block_type: str, blocks: list[dict], as_of: date, result: ValidationResult) -> None:
    suite = load_suite(block_type)
    df, owner = _frame(block_type, blocks, suite, as_of)
    if not len(df):
        return
    batch = ds.add_dataframe_asset(block_type).add_batch_definition_whole_dataframe("run") \
        .get_batch(batch_parameters={"dataframe": df})
    res = batch.validate(_gx_suite(suite), result_format={"result_format": "COMPLETE",
                                                          "unexpected_index_column_names": ["_row"]})
    for er in res.results:
        cfg = er.expectation_config
        meta = cfg.meta or {}
        column = cfg.kwargs["column"]
        if er.exception_info and er.exception_info.get("raised_exception"):
            raise StructuralError(f"suite {suite['name']}: {cfg.type} on {column} raised "
                                  f"{er.exception_info.get('exception_message')}")
        failed_rows = [int(i["_row"]) for i in (er.result.get("unexpected_index_list") or [])]
        result.outcomes.append(ExpectationOutcome(block_type, cfg.type, column, meta["rule"], meta["severity"],
                                                  len(df), len(failed_rows)))
        field_col = meta["field"] if meta["field"] in df.columns else column
        seen = set()
        for r in failed_rows:
            b = blocks[owner[r]]
            v = df.at[r, field_col]
            key = (b["file_id"], b["ordinal"], meta["rule"], meta["field"], v)
            if key in seen:  # the same value failing twice in one block is one anomaly
                continue
            seen.add(key)
            result.anomalies.append(Anomaly(b["file_id"], b["ordinal"], b["base_id"], b["student_guid"],
                                            block_type, meta["rule"], meta["field"],
                                            None if v is None else str(v), meta["severity"]))
            if meta["severity"] == "error":
                result.invalid_blocks.add((b["file_id"], b["ordinal"]))


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
def validate(conn, ctx: RunContext, report_dir) -> dict:
    """Run the expectation suites (``b2b.validation``, Great Expectations) on the run's new blocks.

    Row-level failures become ``results.anomaly`` rows and their blocks are marked
    ``invalid`` (not loaded); the student's other blocks and the rest of the file go on.
    A structural failure (unknown block type, missing mandatory section) puts the file(s)
    in suspense with the reason in the task log. Writes an HTML report; its path is logged.
    """
    with conn.transaction():
        files = run_files(conn, ctx)
        conn.execute("DELETE FROM results.anomaly WHERE file_id = ANY(%s)", (files,))
        conn.execute("""UPDATE raw.inbound_block SET disposition = 'pending'
                        WHERE file_id = ANY(%s) AND disposition = 'invalid'""", (files,))
        from b2b.ingest.extract import reject_flagged  # pupils sent twice / failing the XSD (issue 9)

        reject_flagged(conn, files)
        rows = conn.execute(
            """SELECT file_id, ordinal, base_id, block_type, student_guid, content
                 FROM raw.inbound_block WHERE file_id = ANY(%s) AND disposition = 'pending'
                ORDER BY file_id, ordinal""", (files,)).fetchall()
        blocks = [dict(file_id=r[0], ordinal=r[1], base_id=r[2], block_type=r[3], student_guid=r[4],
                       content=r[5]) for r in rows]
        missing = _missing_core(conn, ctx, files)
        blocks = [b for b in blocks if b["file_id"] not in missing]
        label = f"{ctx.dag_id}__{ctx.window_end:%Y%m%dT%H%M%S}"
        result = validate_blocks(blocks, run_label=label, report_dir=Path(report_dir), as_of=ctx.window_end.date())
        result.suspended.update(missing)
        for file_id, reason in sorted(result.suspended.items()):
            conn.execute("UPDATE raw.inbound_file SET status = 'suspense', error = %s WHERE file_id = %s",
                         (f"validation: {reason}", file_id))
            log_stage_file(conn, ctx, "validate", file_id, {"suspended": 1},
                           f"validate: file {file_id} put in suspense: {reason}", level="error")
        with conn.cursor() as cur, cur.copy(
                "COPY results.anomaly (file_id, ordinal, base_id, student_guid, block_type, rule, field, value, "
                "severity) FROM STDIN") as copy:
            for a in result.anomalies:
                copy.write_row((a.file_id, a.ordinal, a.base_id, a.student_guid, a.block_type, a.rule, a.field,
                                a.value, a.severity))
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


def _missing_core(conn, ctx: RunContext, files: list[int]) -> dict[int, str]:
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


