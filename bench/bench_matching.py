"""Matching benchmark (issues 5, 14): ours against the legacy rule and Splink 5 on data with known truth.

The simulator builds an LA (school records + LA child records with realistic noise and the
traps in ``simulator/matching_data.py``: twins, siblings, namesakes, a sibling's UPN, unknown
twins, keyboard slips, transpositions, moved families, changed surnames, ...). Each matcher
decides every school record, in a forked process of its own (so its peak memory is its own),
on two versions of the data in the same run:

* ``ids``: as the schools and the LA hold it (UPNs; GUIDs are not linked yet: first-time matching);
* ``no ids``: every UPN and GUID removed (nursery children, other LAs, old records).

For each: automatic recall (correct automatic links / records the LA knows), false links
per 10,000 automatic links by trap, the possible queue as a share of incoming, time and peak
memory (the process's maximum resident set, less what it held before matching).

Splink 5 (DuckDB backend limited to 2 threads, Splink's comparison library: names with term
frequencies, DOB, postcode, UPN, gender; u by random sampling, m by EM over two blocking rules,
trained on at most 30,000 school records — a sample at the large size — then applied to all)
links the best candidate per school record at match probability >= 0.99 and proposes those
from 0.5 (its possible queue).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

TRAPS = ("twin", "unknown_twin", "unknown_twin_alone", "sibling", "sibling_upn", "namesake", "namesake_unknown",
         "namesake_family")


def queue_breakdown(out, core, inc, truth: dict, kinds: dict):
    """The possible queue by cause (issue 14): each proposal's ``why_not_auto`` reasons against
    what the proposed LA child is to the record — the true child, a twin (same surname and DOB
    as the true child or, for a child the LA never knew, the record), a sibling (same surname),
    a namesake (same forename and DOB; or a planted namesake) or another child — and the
    noise kind of the record. Two tables (DataFrames): reasons x relation, kind x relation."""
    import json

    import pandas as pd

    by_pid = core.set_index("person_id")
    by_iid = inc.set_index("incoming_id")
    low = lambda v: (v or "").lower() if isinstance(v, str) else ""  # noqa: E731

    def relation(iid, pid):
        t = truth.get(iid)
        if pid == t:
            return "true pair"
        if pid.startswith("N"):
            return "namesake"
        p = by_pid.loc[pid]
        ref = by_pid.loc[t] if t is not None else by_iid.loc[iid]
        if low(p["surname"]) == low(ref["surname"]):
            return "twin" if str(p["dob"]) == str(ref["dob"]) else "sibling"
        if low(p["forename"]) == low(ref["forename"]) and str(p["dob"]) == str(ref["dob"]):
            return "namesake"
        return "other"

    q = out[out["status"] == "possible"]
    df = pd.DataFrame({"why_not_auto": [",".join(json.loads(e).get("why_not_auto", [])) for e in q["explanation"]],
                       "relation": [relation(i, p) for i, p in zip(q["incoming_id"], q["person_id"])],
                       "kind": [kinds.get(i, "?") for i in q["incoming_id"]]})
    if not len(df):
        return df, df
    return (pd.crosstab(df["why_not_auto"], df["relation"], margins=True),
            pd.crosstab(df["kind"], df["relation"], margins=True))


def evaluate(out, truth: dict, kinds: dict) -> dict:
    linked = out[out["status"].isin(["matched", "matched_with_conflicts"])]
    t = linked["incoming_id"].map(truth)
    correct = int((linked["person_id"] == t).sum())
    false = linked[linked["person_id"] != t.fillna("")]
    known = sum(1 for v in truth.values() if v is not None)
    possible = int((out["status"] == "possible").sum())
    missed = Counter(kinds.get(i, "?") for i, p in zip(out["incoming_id"], out["person_id"])
                     if truth.get(i) is not None and p != truth.get(i))
    return {"linked": len(linked), "correct": correct, "false": len(false),
            "recall": correct / max(known, 1), "false_per_10k": 10_000 * len(false) / max(len(linked), 1),
            "possible": possible, "possible_share": possible / max(len(out), 1),
            "false_by_kind": dict(Counter(kinds.get(i, "?") for i in false["incoming_id"]).most_common()),
            "missed_by_kind": dict(missed.most_common(8))}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def tree_pss_mb(pid: int) -> float:
    """The proportional set size (MB) of a process and every process under it: memory shared
    between them (a forked child's pages it has not written) counted once, split between its
    sharers. 0.0 once the process is gone."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                total += next((int(x.split()[1]) for x in f if x.startswith("Pss:")), 0)
        except OSError:
            pass
    return total / 1024


class TreePeak:
    """The highest :func:`tree_pss_mb` of a process's tree, sampled from another thread every
    ``every`` seconds until :meth:`stop` (the sampling costs the measured process nothing):
    ``peak - start`` is what its work added, its children's included."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        import threading

        self.pid, self.every, self.start, self.peak = pid, every, tree_pss_mb(pid), 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.peak = max(self.peak, tree_pss_mb(self.pid))

    def stop(self) -> float:
        """The peak above the start (MB)."""
        self._done.set()
        self._thread.join()
        return max(0.0, self.peak - self.start)


def in_child(fn, timeout: float | None = None):
    """Run ``fn()`` in a forked process: (result, seconds, peak MB above the start). With
    ``timeout``, a child still running after that many seconds is stopped and the result is
    None (seconds = the timeout, peak = its high-water mark so far). The peak is a floor: the
    child reuses the parent's freed memory without growing (``bench_match_dag.py`` measures
    the DAG path in a new process for that reason)."""
    import pickle
    import select
    import signal

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            base = _rss_mb()
            t = time.perf_counter()
            out = fn()
            secs = time.perf_counter() - t
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
            payload = pickle.dumps((out, secs, peak))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            payload = pickle.dumps((e, 0.0, 0.0))
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(w)
    if timeout is not None and not select.select([r], [], [], timeout)[0]:
        with open(f"/proc/{pid}/status") as st:
            hwm = next((int(x.split()[1]) / 1024 for x in st if x.startswith("VmHWM:")), 0.0)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        return None, float(timeout), hwm  # the process's whole high-water mark (the parent's data included)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError("the matcher's process ended without a result (killed?)")
    out, secs, peak = pickle.loads(data)
    if isinstance(out, BaseException):
        raise out
    return out, secs, peak


def splink_match(core, inc, *, seed: int = 1, train_sample: int = 2_000_000, train_incoming: int = 30_000,
                 threads: int = 2, memory_limit: str = "4GB", school: bool = False):
    """Splink 5 with DuckDB (``threads`` threads) and its comparison library, trained on the data:
    u by random sampling, m by EM, on at most ``train_incoming`` school records (a sample at
    the large size; the model is then applied to every record). ``school``: also an exact-match
    comparison of the school the LA holds with the record's (off by default: at 15k it made
    Splink link a sibling at the school for a child the LA does not know, 37 false links)."""
    import logging

    import duckdb
    import pandas as pd
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.ERROR)

    def frame(df, id_col):
        out = pd.DataFrame({"unique_id": df[id_col].astype(str)})
        for c in ("upn", "forename", "surname", "gender", "postcode"):
            v = df[c].where(df[c].notna(), None)
            out[c] = v.astype(str).str.strip().str.lower().replace({"": None, "none": None, "nan": None})
        out["dob"] = pd.to_datetime(df["dob"], errors="coerce").dt.strftime("%Y-%m-%d")
        # the school (the LA's for its child, the school's own for its record): ours reads it too
        out["school"] = df["base_id"].where(df["base_id"].notna(), None) if "base_id" in df else None
        return out

    def api():
        con = duckdb.connect()
        con.execute(f"SET threads = {int(threads)}")
        con.execute(f"SET memory_limit = '{memory_limit}'")  # DuckDB spills to disk beyond it
        con.execute("SET temp_directory = '/tmp/b2b-bench-splink'")
        return DuckDBAPI(con)

    has_upn = core["upn"].notna().any()
    has_school = school and "base_id" in core and core["base_id"].notna().any()
    settings = SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.NameComparison("forename").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            *([cl.ExactMatch("upn")] if has_upn else []),
            cl.ExactMatch("gender"),
            cl.PostcodeComparison("postcode"),
            *([cl.ExactMatch("school")] if has_school else []),
        ],
        blocking_rules_to_generate_predictions=[
            *([block_on("upn")] if has_upn else []), block_on("dob", "surname"), block_on("dob", "forename"),
            block_on("forename", "surname"), block_on("postcode", "substr(dob, 1, 4)"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    left_df, right_df = frame(core, "person_id"), frame(inc, "incoming_id")
    sample = right_df if len(right_df) <= train_incoming else right_df.sample(train_incoming, random_state=seed)
    db = api()
    trainer = Linker([db.register(left_df), db.register(sample)], settings, log_level=logging.ERROR)
    trainer.training.estimate_probability_two_random_records_match(
        [block_on("forename", "surname", "dob")], recall=0.8)
    trainer.training.estimate_u_using_random_sampling(max_pairs=train_sample, seed=seed)
    trainer.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    trainer.training.estimate_parameters_using_expectation_maximisation(block_on("surname"))
    model = trainer.misc.save_model_to_json()
    db = api()
    linker = Linker([db.register(left_df), db.register(right_df)], model, log_level=logging.ERROR)
    pred = linker.inference.predict(threshold_match_probability=0.5).as_pandas_dataframe()
    ids = set(inc["incoming_id"].astype(str))
    # link_only: either side can be on the left
    left_inc = pred["unique_id_l"].isin(ids)
    pred["iid"] = pred["unique_id_l"].where(left_inc, pred["unique_id_r"])
    pred["pid"] = pred["unique_id_r"].where(left_inc, pred["unique_id_l"])
    best = pred.sort_values("match_probability", ascending=False).drop_duplicates("iid").set_index("iid")
    out = pd.DataFrame({"incoming_id": inc["incoming_id"].astype(str)})
    p = out["incoming_id"].map(best["match_probability"]).fillna(0.0)
    out["person_id"] = out["incoming_id"].map(best["pid"]).fillna("")
    out["status"] = ["matched" if x >= 0.99 else "possible" if x >= 0.5 else "unmatched" for x in p]
    out.loc[out["status"] == "unmatched", "person_id"] = ""
    return out


def fresh_database(admin_url: str, name: str) -> str:
    """An empty database ``name`` on the server of ``admin_url`` (dropped first if it exists); its URL."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(admin_url, autocommit=True) as a:
        a.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        a.execute(f"CREATE DATABASE {name}")
    return make_conninfo(admin_url, dbname=name)


def load_dag_db(core, inc, url: str) -> None:
    """The same data as the DAG path sees it: LA children in ``core.child``, each school's
    records as one parsed file of one run, with student and address staging rows."""
    import io
    import json

    import psycopg

    from b2b import db as b2bdb

    with psycopg.connect(url) as conn:
        b2bdb.upgrade(conn)
        conn.execute("TRUNCATE core.child, raw.inbound_file CASCADE")

        def copy(sql, rows):
            buf = io.StringIO()
            for r in rows:
                buf.write("\t".join("\\N" if v is None or v != v or v == "" else str(v).replace("\t", " ")
                                    for v in r) + "\n")
            with conn.cursor() as cur, cur.copy(sql) as cp:
                cp.write(buf.getvalue())

        line = core["address_line1"].fillna("").str.split(" ", n=1)
        school = core["base_id"] if "base_id" in core else [None] * len(core)
        copy("COPY core.child (person_id, upn, forename, middle_names, surname, gender, dob, paon, street, postcode, "
             "base_id) FROM STDIN", zip(core["person_id"], core["upn"], core["forename"], core["middle_names"],
                                        core["surname"], core["gender"], core["dob"], line.str[0], line.str[1],
                                        core["postcode"], school))
        bases = sorted(inc["base_id"].unique())
        fid = {b: k + 1 for k, b in enumerate(bases)}
        copy("COPY raw.inbound_file (file_id, base_id, task_key, dag_id, run_id, window_end, window_order, seq, source, "
             "data_filter, label, content_type, size_bytes, sha256, status) FROM STDIN",
             [(fid[b], b, "snapshot", DAG_ID, "bench", DAG_END, "20261005170000|" + DAG_ID, fid[b], "sims7", "snapshot",
               "export", "application/xml", 0, "-", "loaded") for b in bases])
        conn.execute("SELECT setval(pg_get_serial_sequence('raw.inbound_file', 'file_id'), %s)", (len(bases),))
        ordinal = inc.groupby("base_id").cumcount() * 2 + 1
        f = inc["base_id"].map(fid)
        copy("COPY raw.inbound_block (file_id, ordinal, base_id, block_type, student_guid, content) FROM STDIN",
             [*zip(f, ordinal, inc["base_id"], ["student"] * len(inc), inc["guid"], ["{}"] * len(inc)),
              *zip(f, ordinal + 1, inc["base_id"], ["address"] * len(inc), inc["guid"], ["{}"] * len(inc))])
        copy("COPY staging.student (file_id, ordinal, base_id, student_guid, upn, forename, middle_names, surname, "
             "dob, gender) FROM STDIN", zip(f, ordinal, inc["base_id"], inc["guid"], inc["upn"], inc["forename"],
                                           inc["middle_names"], inc["surname"], inc["dob"], inc["gender"]))
        iline = inc["address_line1"].fillna("").str.split(" ", n=1)
        copy("COPY staging.address (file_id, ordinal, base_id, student_guid, paon, street, postcode) FROM STDIN",
             zip(f, ordinal + 1, inc["base_id"], inc["guid"], iline.str[0], iline.str[1], inc["postcode"]))
        conn.execute("ANALYZE")
        json.dumps(None)


DAG_ID = "b2b__bench__snapshot"
DAG_END = "2026-10-05 17:00:00+00"


def dag_match(url: str, inc, per_school: bool = False):
    """``b2b.reconcile.match_stage.match`` (the DAG path) on the loaded run; decisions as a frame.
    ``per_school``: as the DAGs run it, one run per school (each school's file its own DAG's),
    in school order: the cross-school guards then act across runs. ``inc`` None (not
    ``per_school``): the stage only, nothing read back (None)."""
    from datetime import UTC, datetime, timedelta

    import pandas as pd
    import psycopg

    from b2b.config.settings import Settings
    from b2b.context import RunContext
    from b2b.reconcile.match_stage import match as stage

    end = datetime(2026, 10, 5, 17, tzinfo=UTC)
    ctx = RunContext(base_id="bench", task_key="snapshot", dag_id=DAG_ID, run_id="bench", source="sims7",
                     data_filter="snapshot", window_start=end - timedelta(days=7), window_end=end)
    with psycopg.connect(url) as conn:
        if per_school:
            conn.execute("UPDATE raw.inbound_file SET dag_id = 'b2b__' || base_id || '__snapshot'")
            conn.execute("TRUNCATE results.match, core.child_link")
            conn.commit()
            for base in sorted(inc["base_id"].unique()):
                stage(conn, RunContext(base_id=base, task_key="snapshot", dag_id=f"b2b__{base}__snapshot",
                                       run_id="bench", source="sims7", data_filter="snapshot",
                                       window_start=ctx.window_start, window_end=end), Settings())
        else:
            stage(conn, ctx, Settings())
        if inc is None:  # (the caller reads the decisions itself)
            return None
        rows = conn.execute("SELECT base_id, student_guid, status, coalesce(person_id, '') FROM results.match").fetchall()
        if per_school:  # as loaded: one run of every school
            conn.execute("UPDATE raw.inbound_file SET dag_id = %s", (DAG_ID,))
            conn.execute("TRUNCATE results.match, core.child_link")
            conn.commit()
    back = dict(zip(zip(inc["base_id"], inc["guid"]), inc["incoming_id"]))
    return pd.DataFrame([(back[(b, g)], st, p) for b, g, st, p in rows], columns=["incoming_id", "status", "person_id"])


def strip_ids(core, inc):
    core, inc = core.copy(), inc.copy()
    for df in (core, inc):
        df["upn"] = None
        df["guid"] = None
    inc["guid"] = [f"x{k}" for k in range(len(inc))]  # a school always has its own id; never linked
    return core, inc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--incoming", type=int, default=15_000)
    ap.add_argument("--core", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-splink", action="store_true", help="leave Splink out (it is the slowest)")
    ap.add_argument("--splink-timeout", type=float, default=None,
                    help="stop Splink after this many seconds and report how far it got")
    ap.add_argument("--ids-only", action="store_true", help="leave out the data without identifiers")
    ap.add_argument("--queue", action="store_true",
                    help="break our possible queue down by cause (why_not_auto, and noise kind, x relation)")
    ap.add_argument("--household", action="store_true",
                    help="also ours with the moved-household rule on without identifiers too (MatchConfig(moved_household='always'))")
    ap.add_argument("--splink-school", action="store_true",
                    help="also Splink given the school (an exact-match comparison of the LA's school with the record's)")
    ap.add_argument("--rare-name", action="store_true",
                    help="also ours with the rare name + DOB rule on (MatchConfig(rare_name=True))")
    ap.add_argument("--dag", action="store_true",
                    help="also the DAG path's match stage on the same data in embedded PostgreSQL (ids data): "
                         "all schools in one run, and one run per school as the DAGs run it")
    args = ap.parse_args(argv)

    from b2b.matching import legacy_match, match
    from simulator.matching_data import match_dataset

    t = time.perf_counter()
    core, inc, truth, kinds = match_dataset(args.incoming, args.core, seed=args.seed)
    print(f"matching: {len(inc):,} school records vs {len(core):,} LA records built in {time.perf_counter() - t:.0f}s; "
          f"kinds: {dict(Counter(kinds.values()).most_common())}")
    def ours_with(**options):
        """Ours with these MatchConfig options."""
        from b2b.matching import MatchConfig

        return lambda c, i: match(c, i, MatchConfig(**options))

    # "ours, no school": the school the LA holds not read (as before issue 14's school rule)
    runs = [("legacy", legacy_match), ("ours", match), ("ours, no school", ours_with(school_evidence=False))] + \
        ([("ours+hh", ours_with(moved_household="always"))] if args.household else []) + \
        ([("ours+rare", ours_with(rare_name=True))] if args.rare_name else []) + \
        ([] if args.no_splink else [("splink", splink_match)]) + \
        ([("splink+school", lambda c, i: splink_match(c, i, school=True))]
         if args.splink_school and not args.no_splink else [])
    rows = []
    dag_url = None
    if args.dag:

        from b2b import db as b2bdb

        admin = b2bdb.embedded_url(Path("/tmp/b2b-bench-match-pg"))
        dag_url = fresh_database(admin, f"b2b_bench_match_{args.incoming}_{args.core}")
        t = time.perf_counter()
        load_dag_db(core, inc, dag_url)
        print(f"matching: DAG data loaded in {time.perf_counter() - t:.0f}s")
    datasets = [("ids", (core, inc))] + ([] if args.ids_only else [("no ids", strip_ids(core, inc))])
    # the slowest (Splink) last, so a stopped Splink run leaves every other figure measured
    order = [(d, name, fn) for d in datasets
             for name, fn in runs + ([("dag", lambda c, i: dag_match(dag_url, i)),
                                      ("dag/school", lambda c, i: dag_match(dag_url, i, per_school=True))]
                                     if dag_url and d[0] == "ids" else [])
             if name != "splink"] + [(d, name, fn) for d in datasets for name, fn in runs if name == "splink"]
    for (data_name, (c, i)), name, fn in order:
        out, secs, peak = in_child(lambda fn=fn, c=c, i=i: fn(c, i),
                                   args.splink_timeout if name.startswith("splink") else None)
        if out is None:
            print(f"matching: {data_name:<6} {name:<6} stopped after {secs:.0f}s (peak {peak:,.0f} MB, whole process)")
            rows.append({"data": data_name, "matcher": name, "seconds": secs, "peak_mb": peak, "stopped": True})
            continue
        r = evaluate(out, truth, kinds) | {"seconds": secs, "peak_mb": peak, "matcher": name, "data": data_name}
        rows.append(r)
        traps = {k: round(10_000 * v / max(r["linked"], 1), 1) for k, v in r["false_by_kind"].items()}
        print(f"matching: {data_name:<6} {name:<6} {secs:7.1f}s ({len(i) / max(secs, 1e-9):,.0f} rec/s, "
              f"peak +{peak:,.0f} MB)  auto recall {r['recall']:.4f}  false links {r['false']} "
              f"({r['false_per_10k']:.1f} per 10k auto)  possible {r['possible']} "
              f"({100 * r['possible_share']:.2f}%)")
        print(f"matching: {data_name:<6} {name:<6} false per 10k by trap: {traps or 'none'}; "
              f"right child not shown (unmatched or another) by kind: {r['missed_by_kind']}")
        if args.queue and name.startswith("ours"):
            for table in queue_breakdown(out, c, i, truth, kinds):
                print(table.to_string())
    print("\n| data | matcher | time | peak | auto recall | false links (per 10k auto) | by trap | possible queue |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("stopped"):
            print(f"| {r['data']} | {r['matcher']} | stopped at {r['seconds']:.0f} s | {r['peak_mb']:,.0f} MB (process) "
                  "| — | — | — | — |")
            continue
        trap = ", ".join(f"{k} {v}" for k, v in r["false_by_kind"].items()) or "—"
        print(f"| {r['data']} | {r['matcher']} | {r['seconds']:.1f} s | {r['peak_mb']:,.0f} MB | {r['recall']:.4f} "
              f"| {r['false']} ({r['false_per_10k']:.1f}) | {trap} | {100 * r['possible_share']:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
