"""The DAG path's match stage against ``b2b match`` (issue 15): records/s per student and peak memory.

At each size (LA records x school records; default 30k x 15k and 300k x 250k, the sizes
``bench_matching.py`` uses) the simulator's matching dataset (``simulator/matching_data.py``)
is decided by:

* ``cli``: ``b2b.matching.match`` on the whole LA frame and every school record (``b2b match``),
  in a forked process (its peak: the process's high-water mark above its start, a floor: a
  fork reuses the bench's freed memory without growing);
* ``dag``: ``b2b.reconcile.match_stage.match`` (the DAG path) on the same data loaded into
  embedded PostgreSQL as one run (``bench_matching.load_dag_db``), then read back, in a NEW
  process (``--dag-only``), as an Airflow task runs it, once per ``--processes`` value (the
  stage's ``B2B_MATCH_PROCESSES``; default: its default, one per core). Its peak is the whole
  process tree's: the highest proportional set size of the process and the children it forks,
  interpreter and libraries included, sampled from outside (``bench_matching.TreePeak``);
* the ``b2b match`` command as a user runs it (a process of its own: CSV files in, the
  decisions' CSV out; writing its input files is not timed), its CPU seconds beside the others.

It prints both rates, the DAG path's rate as a multiple of the CLI's (the goal: >= 1), its peak
(the goal: <= 1 GB at 300k x 250k), whether both gave the same decisions (status and child per
record), and the DAG path's time per step (wall time; the SQL statements' server time is in the
step that waits for them). Wall time on a shared machine measures the neighbours too, so it
also prints CPU time: the process's own, plus the bench's PostgreSQL server's for the DAG path
(measured once the load's tables are vacuumed, analysed and checkpointed: :func:`settle`).

    python bench/bench_match_dag.py                        # both sizes
    python bench/bench_match_dag.py --sizes 30000x15000    # the small one only
    python bench/bench_match_dag.py --sizes 30000x15000 --part-students 2000  # several parts at the small size
    python bench/bench_match_dag.py --sizes 300000x250000 --processes 1,2     # one process, then two
"""
from __future__ import annotations

import argparse
import functools
import inspect
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "plugins"), str(HERE)]
from bench_matching import dag_match, fresh_database, in_child, load_dag_db  # noqa: E402

#: the match stage's steps (functions of b2b.reconcile.match_stage) timed in the DAG run
STEPS = ("incoming_frame", "term_frequencies", "run_candidates", "matcher", "_first_pass_forked", "_write_matches", "claims_in_other_parts",
         "claimed_outside", "claimed_exactly_in_another_part", "match_carers")
PG_DIR = Path("/tmp/b2b-bench-match-dag-pg")


def dag_with_steps(url: str, inc) -> tuple:
    """``bench_matching.dag_match`` with each step of the stage timed: (decisions, {step: s})."""
    from b2b import matching
    from b2b.reconcile import match_stage

    spent: dict[str, float] = defaultdict(float)

    def timed(mod, name: str, label) -> None:
        """``label``: the step's name, or a function of the call's arguments giving it."""
        fn = getattr(mod, name)

        @functools.wraps(fn)
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label(k) if callable(label) else label] += time.perf_counter() - t

        @functools.wraps(fn)
        def run_gen(*a, **k):  # a generator's time is spent while it is read, part by part
            it = fn(*a, **k)
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    spent[label] += time.perf_counter() - t
                    return
                spent[label] += time.perf_counter() - t
                yield item

        setattr(mod, name, run_gen if inspect.isgeneratorfunction(fn) else run)

    for step in STEPS:
        if step == "matcher":  # (a part decided again once the other parts' claims are known: its own line)
            timed(matching, "match", lambda k: "matcher (parts decided again)"
                  if k.get("claimed") is not None or k.get("claims_elsewhere") is not None else "matcher")
        elif step == "term_frequencies":  # (read by the stage through PendingFrequencies)
            timed(match_stage.PendingFrequencies, "result", step)
        elif hasattr(match_stage, step):
            timed(match_stage, step, step)
    t = time.perf_counter()
    out = dag_match(url, inc)
    spent["stage + read back"] = time.perf_counter() - t
    return out, dict(spent)


def cpu_seconds() -> float:
    """This process's CPU time (user + system), and that of its children it has waited for
    (the match stage's forked processes: ``b2b.forked``)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def server_cpu(pgdata: Path) -> float:
    """CPU time of the bench's own PostgreSQL: the postmaster, its live processes and the
    backends it has reaped (a run's backend exits with its connection)."""
    import psutil

    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    p = psutil.Process(pid)
    t = p.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for c in p.children(recursive=True):
        try:
            ct = c.cpu_times()
            total += ct.user + ct.system
        except psutil.NoSuchProcess:
            pass
    return total


def settle(url: str) -> None:
    """The load's aftermath done before the match is measured: its tables vacuumed and analysed
    and its WAL checkpointed, which the server would otherwise do (autovacuum, the checkpointer)
    at some moment of the match and count as the match's CPU (the stop before counted 3.3
    PostgreSQL CPU-s at 30k x 15k where the same code, settled, counts 1.4)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def with_cpu(fn):
    """``fn()`` and the CPU seconds it took in this process."""
    c = cpu_seconds()
    out = fn()
    return out, cpu_seconds() - c


def dump_matches(url: str, path: Path) -> None:
    """The run's ``results.match`` rows (every column but ids and times), sorted, to a CSV file:
    two runs' dumps compare with ``cmp`` (the same decisions, scores and explanations)."""
    import psycopg

    with psycopg.connect(url) as conn, path.open("wb") as f, conn.cursor() as cur, cur.copy(
            """COPY (SELECT base_id, student_guid, status, person_id, rule, score, hidden, age_years, explanation
                       FROM results.match ORDER BY base_id, student_guid) TO STDOUT (FORMAT csv)""") as copy:
        for chunk in copy:
            f.write(chunk)


def cli_command(core, inc) -> tuple[float, float]:
    """The ``b2b match`` command as a user runs it, on the same records written to CSV files
    (writing them not timed): its wall seconds and CPU seconds (reading the CSVs, matching,
    writing the decisions)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="b2b-bench-match-cli-") as tmp:
        paths = [Path(tmp) / n for n in ("core.csv", "incoming.csv", "out.csv")]
        core.to_csv(paths[0], index=False)
        inc.to_csv(paths[1], index=False)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "b2b.cli", "match", "--core", str(paths[0]), "--incoming",
                        str(paths[1]), "--out", str(paths[2])], check=True, stdout=subprocess.DEVNULL,
                       cwd=HERE.parent, env={**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE.parent / 'plugins'}"})
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def dag_process(url: str, inc, procs: int | None) -> tuple:
    """The DAG path in a new process of its own (``--dag-only``), as an Airflow task runs it:
    ((decisions, steps), CPU-s of the process and its forked children, seconds, peak MB). The
    peak is the highest proportional set size of the process and its children above its start
    (sampled from here, ``bench_matching.TreePeak``), or its own high-water mark if higher. A
    new process, not a fork of this one: a fork shares this process's data (the bench's
    frames), which the stage's own forked children would then share four ways, and the
    proportional sizes would count a share of it."""
    import pickle
    import subprocess
    import tempfile

    import pandas as pd
    from bench_matching import TreePeak

    from b2b import forked

    env = {**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE.parent / 'plugins'}"}
    if procs is not None:
        env[forked.PROCESSES_ENV] = str(procs)
    else:
        env.pop(forked.PROCESSES_ENV, None)
    with tempfile.TemporaryDirectory(prefix="b2b-bench-match-dag-") as tmp:
        out = Path(tmp) / "out.pickle"
        p = subprocess.Popen([sys.executable, str(HERE / "bench_match_dag.py"), "--dag-only", url, "--out", str(out),
                              "--part-students", str(_part_students())], cwd=HERE.parent, env=env)
        sampler = TreePeak(p.pid, every=0.1)
        if p.wait() != 0:
            sampler.stop()
            raise RuntimeError(f"the DAG path's process failed (exit {p.returncode})")
        tree = sampler.stop()
        steps, cpu, secs, own_peak = pickle.loads(out.read_bytes())
        rows = pd.read_csv(f"{out}.csv", names=["base_id", "guid", "status", "person_id"], dtype=str,
                           keep_default_na=False)
    back = dict(zip(zip(inc["base_id"], inc["guid"]), inc["incoming_id"]))
    dag = pd.DataFrame({"incoming_id": [back[(b, g)] for b, g in zip(rows["base_id"], rows["guid"])],
                        "status": rows["status"], "person_id": rows["person_id"]})
    return (dag, steps), cpu, secs, max(own_peak, tree)


def _part_students() -> int:
    from b2b.reconcile import match_stage

    return match_stage.PART_STUDENTS


def _hwm_mb() -> float:
    """This process's resident high-water mark (MB) since its program started (``VmHWM``: of
    its own memory map, new at exec). Not ``ru_maxrss``: Linux carries it across exec, so a
    process started from the bench would report the bench's size (2.6 GB at 300k x 256k
    where the stage's own peak is 1.2 GB)."""
    with open("/proc/self/status") as f:
        return next((int(x.split()[1]) / 1024 for x in f if x.startswith("VmHWM:")), 0.0)


def dag_only(url: str, out: Path) -> None:
    """``--dag-only``: the stage on the loaded run (its steps timed), then (steps, CPU-s,
    seconds, own peak MB) pickled to ``out`` and the decisions COPYed to ``out`` + ``.csv``.
    The process holds nothing of the bench's while the stage runs (no frame of the run's
    students to map its rows back: an earlier version held 256k of them, and read the rows
    back as Python tuples), as an Airflow task holds nothing else; its peak is taken as the
    stage returns."""
    import pickle

    import psycopg
    from bench_matching import _rss_mb

    base = _rss_mb()
    c = cpu_seconds()
    t = time.perf_counter()
    _, steps = dag_with_steps(url, None)
    secs = time.perf_counter() - t
    cpu = cpu_seconds() - c
    peak = _hwm_mb() - base
    with psycopg.connect(url) as conn, open(f"{out}.csv", "wb") as f, conn.cursor() as cur, \
            cur.copy("""COPY (SELECT base_id, student_guid, status, coalesce(person_id, '') FROM results.match)
                        TO STDOUT WITH (FORMAT csv)""") as copy:
        for data in copy:
            f.write(data)
    out.write_bytes(pickle.dumps((steps, cpu, secs, peak)))


def one_size(core_n: int, inc_n: int, seed: int, dump: Path | None = None,
             processes: tuple[int | None, ...] = (None,)) -> list[dict]:
    """The CLI once, then the DAG path once per entry of ``processes`` (the stage's
    ``B2B_MATCH_PROCESSES``; None: its default, one per core), each on a database of its own:
    one result per DAG run."""
    import psycopg

    from b2b import db as b2bdb
    from b2b import forked
    from b2b.matching import match
    from simulator.matching_data import match_dataset

    t = time.perf_counter()
    core, inc, _truth, _kinds = match_dataset(inc_n, core_n, seed=seed)
    print(f"match_dag: {len(core):,} LA x {len(inc):,} school records built in {time.perf_counter() - t:.0f}s",
          flush=True)
    (cli, cli_cpu), cli_s, cli_peak = in_child(lambda: with_cpu(
        lambda: match(core, inc)[["incoming_id", "status", "person_id"]]))
    cmd_s, cmd_cpu = cli_command(core, inc)
    admin = b2bdb.embedded_url(PG_DIR)
    out = []
    for procs in processes:
        dbname = f"b2b_bench_match_dag_{inc_n}_{core_n}"
        url = fresh_database(admin, dbname)
        t = time.perf_counter()
        load_dag_db(core, inc, url)
        settle(url)
        print(f"match_dag: DAG data loaded in {time.perf_counter() - t:.0f}s", flush=True)

        pg0 = server_cpu(PG_DIR)
        (dag, steps), dag_cpu, dag_s, dag_peak = dag_process(url, inc, procs)
        dag_pg_cpu = server_cpu(PG_DIR) - pg0
        if dump:
            dump_matches(url, dump.with_name(f"{dump.stem}_{core_n}x{inc_n}_p{procs or 'default'}{dump.suffix}"))
        with psycopg.connect(admin, autocommit=True) as a:
            a.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        a_ = cli.set_index("incoming_id").sort_index()
        b_ = dag.set_index("incoming_id").sort_index()[["status", "person_id"]]
        same = bool(len(a_) == len(b_) and (a_.index == b_.index).all() and (a_.values == b_.values).all())
        if not same and len(a_) == len(b_) and (a_.index == b_.index).all():
            # which records differ: (the CLI's status -> the DAG path's), and whether the child differs
            diff = a_.merge(b_, left_index=True, right_index=True, suffixes=("", "_dag"))
            diff = diff[(diff["status"] != diff["status_dag"]) | (diff["person_id"] != diff["person_id_dag"])]
            print(f"match_dag: {len(diff)} records decided differently: " + ", ".join(
                f"{k[0]} -> {k[1]}: {n}" for k, n in diff.groupby(["status", "status_dag"]).size().items()),
                flush=True)
        out.append({"core": len(core), "incoming": len(inc), "cli_s": cli_s, "cli_peak": cli_peak, "dag_s": dag_s,
                    "cmd_s": cmd_s, "cmd_cpu": cmd_cpu, "processes": procs or forked.processes(),
                    "dag_peak": dag_peak, "steps": steps, "same": same, "cli_cpu": cli_cpu,
                    "dag_cpu": dag_cpu + dag_pg_cpu, "dag_pg_cpu": dag_pg_cpu})
    return out


def report(r: dict) -> None:
    """One DAG run's lines."""
    n = r["incoming"]
    print(f"match_dag: {r['core']:,} x {n:,}, {r['processes']} process(es): cli {r['cli_s']:.1f}s ({n / r['cli_s']:,.0f} rec/s, peak "
          f"+{r['cli_peak']:,.0f} MB); dag {r['dag_s']:.1f}s ({n / r['dag_s']:,.0f} rec/s, peak "
          f"+{r['dag_peak']:,.0f} MB); dag rate = {r['cli_s'] / r['dag_s']:.2f} x cli; "
          f"same decisions: {r['same']}", flush=True)
    total = r["steps"].get("stage + read back", r["dag_s"])
    split = ", ".join(f"{k} {v:.1f}s ({100 * v / total:.0f}%)" for k, v in r["steps"].items()
                      if k != "stage + read back")
    print(f"match_dag: dag steps: {split}; stage + read back {total:.1f}s", flush=True)
    print(f"match_dag: CPU time (the figure to compare on a shared machine): cli {r['cli_cpu']:.1f}s "
          f"({n / r['cli_cpu']:,.0f} rec/CPU-s); dag {r['dag_cpu']:.1f}s of which PostgreSQL "
          f"{r['dag_pg_cpu']:.1f}s ({n / r['dag_cpu']:,.0f} rec/CPU-s); dag = "
          f"{r['cli_cpu'] / r['dag_cpu']:.2f} x cli", flush=True)
    print(f"match_dag: the `b2b match` command (CSV in, match, CSV out) {r['cmd_s']:.1f}s, {r['cmd_cpu']:.1f} "
          f"CPU-s ({n / r['cmd_cpu']:,.0f} rec/CPU-s); dag = {r['cmd_cpu'] / r['dag_cpu']:.2f} x the command "
          f"per CPU-s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="30000x15000,300000x250000",
                    help="LA records x school records, comma-separated (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--part-students", type=int, default=None,
                    help="students matched together on the DAG path (default: match_stage.PART_STUDENTS)")
    ap.add_argument("--processes", default="",
                    help="the DAG path once per value, comma-separated: its B2B_MATCH_PROCESSES (1: no fork; "
                         "default: the stage's default, one process per core)")
    ap.add_argument("--dump", type=Path, default=None,
                    help="write the DAG path's results.match rows to this CSV (the size appended to its name)")
    ap.add_argument("--dag-only", metavar="URL", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part_students:
        from b2b.reconcile import match_stage

        match_stage.PART_STUDENTS = args.part_students
    if args.dag_only:  # (the DAG path's own process: dag_process)
        dag_only(args.dag_only, args.out)
        return 0
    rows = []
    for size in args.sizes.split(","):
        core_n, inc_n = (int(x) for x in size.lower().split("x"))
        procs = tuple(int(x) for x in args.processes.split(",") if x.strip()) or (None,)
        for r in one_size(core_n, inc_n, args.seed, args.dump, procs):
            rows.append(r)
            report(r)
    print("\n| LA x school records | processes | cli rec/s | cli peak | dag rec/s | dag peak | dag / cli rate | dag / cli per CPU-s "
          "| dag / `b2b match` command per CPU-s | same decisions |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = r["incoming"]
        print(f"| {r['core']:,} x {n:,} | {r['processes']} | {n / r['cli_s']:,.0f} | {r['cli_peak']:,.0f} MB | {n / r['dag_s']:,.0f} "
              f"| {r['dag_peak']:,.0f} MB | {r['cli_s'] / r['dag_s']:.2f} | {r['cli_cpu'] / r['dag_cpu']:.2f} "
              f"| {r['cmd_cpu'] / r['dag_cpu']:.2f} | {'yes' if r['same'] else 'NO'} |")
    from b2b import db as b2bdb

    b2bdb.stop_embedded(PG_DIR)
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
