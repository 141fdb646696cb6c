"""Run every benchmark and print its figures (``make bench``).

The stage bench runs at several LA sizes (``B2B_BENCH_SIZES``, schools, default 50,200 as issue 15 asks;
400 students per school) and the growth of each stage's cost with size is fitted as a power
law between the two largest sizes (not assumed linear), then projected to a 600-school,
250,000-student LA. The dag-processor bench runs on SQLite and on PostgreSQL; the scheduler
bench runs a 50-school changed-data day through `airflow standalone` with each task granularity.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_stages import STAGES  # noqa: E402

SIZES = [int(s) for s in os.environ.get("B2B_BENCH_SIZES", "50,200").split(",")]
PER_SCHOOL = 400
TARGET_SCHOOLS = 600


def run(name: str, *args: str) -> int:
    print(f"== {name} {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, str(HERE / name), *args]).returncode


def project(figures: list[dict], window: str) -> None:
    """Each stage's seconds at each size, its growth exponent, and the 600-school projection."""
    print(f"scaling, {window}: seconds per stage by schools (k: time ~ schools^k between the last two sizes; "
          f"projection with max(k, 1))")
    print("  " + f"{'stage':<12}" + "".join(f"{f['schools']:>9}" for f in figures) + f"{'k':>6}{TARGET_SCHOOLS:>9}")
    total = 0.0
    (a, b) = figures[-2:] if len(figures) > 1 else (figures[0], figures[0])
    for s in STAGES:
        ta, tb = a[window][s]["seconds"], b[window][s]["seconds"]
        k = math.log(tb / ta) / math.log(b["schools"] / a["schools"]) if ta > 0 and tb > 0 and a is not b else 1.0
        # a school's own work cannot shrink as the LA grows: k < 1 is the shared machine's load
        # changing between the runs, so the projection uses at least linear growth
        proj = tb * (TARGET_SCHOOLS / b["schools"]) ** max(k, 1.0)
        total += proj
        print("  " + f"{s:<12}" + "".join(f"{f[window][s]['seconds']:9.2f}" for f in figures) + f"{k:6.2f}{proj:9.1f}")
    print("  " + f"{'all stages':<12}" + "".join(f"{f[window]['total_s']:9.1f}" for f in figures)
          + f"{'':>6}{total:9.1f}")


def main() -> int:
    rc = run("bench_parse.py")
    rc |= run("bench_extract.py")
    rc |= run("bench_validate.py")
    rc |= run("bench_contacts.py")  # an incremental contacts run vs a full rebuild as history grows
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            out = Path(tmp) / f"stages_{n}.json"
            rc |= run("bench_stages.py", "--schools", str(n), "--students", str(n * PER_SCHOOL), "--json", str(out))
            if out.exists():
                figures.append(json.loads(out.read_text()))
    if figures:
        print("== scaling")
        project(figures, "snapshot")
        project(figures, "changed_data")
    rc |= run("bench_dagprocessor.py")
    rc |= run("bench_dagprocessor.py", "--postgres")
    rc |= run("bench_scheduler.py", "--schools", "50")  # the real scheduler: per-task cost, a changed-data day
    rc |= run("bench_match_dag.py")
    return rc


if __name__ == "__main__":
    sys.exit(main())
