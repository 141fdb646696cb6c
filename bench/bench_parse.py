"""DAG-file parse time for a generated LA catalogue (default 600 bases x 6 tasks).

Each measurement is a fresh Python process that imports Airflow and parses
``dags/b2b_generated.py`` the way the dag-processor does (DagBag on that file), so
the figure includes everything Airflow pays per parse. Prints the median of N runs,
for the whole file and for the single-DAG parse a worker does before a task run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROBE = r"""
import json, time, sys
t0 = time.perf_counter()
import airflow.sdk  # noqa: F401  (Airflow's own import cost, reported separately)
t1 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"airflow_import_s": t1 - t0, "parse_s": t2 - t1, "dags": len(bag.dags),
                  "errors": len(bag.import_errors)}))
"""


def measure(catalogue: Path, runs: int, dag_id: str | None = None) -> dict:
    env = dict(os.environ, B2B_CATALOGUE=str(catalogue))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "plugins")])
    if dag_id:
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = dag_id
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags" / "b2b_generated.py")],
                             env=env, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "parse_s": statistics.median(r["parse_s"] for r in results),
        "airflow_import_s": statistics.median(r["airflow_import_s"] for r in results),
        "dags": results[0]["dags"], "errors": results[0]["errors"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bases", type=int, default=600)
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    import yaml
    from gen_catalogue import generate

    with tempfile.TemporaryDirectory() as tmp:
        cat = Path(tmp) / "catalogue.yaml"
        cat.write_text(yaml.safe_dump(generate(args.bases, args.tasks), sort_keys=False))
        full = measure(cat, args.runs)
        from b2b.config.catalogue import load_catalogue

        ids = sorted(s.dag_id for s in load_catalogue(cat).dag_specs(include_inactive=False))
        one = ids[len(ids) // 2]
        single = measure(cat, args.runs, dag_id=one)
    print(f"parse: catalogue {args.bases} bases x {args.tasks} tasks -> {full['dags']} DAGs, "
          f"{full['errors']} import errors")
    print(f"parse: whole file  median {full['parse_s']:.2f}s over {args.runs} runs "
          f"({full['parse_s'] / max(full['dags'], 1) * 1000:.2f} ms/DAG); Airflow import {full['airflow_import_s']:.2f}s")
    print(f"parse: single DAG  median {single['parse_s']:.3f}s (parsing context, {single['dags']} DAG built)")
    print(f"parse: headroom vs dagbag_import_timeout 30s: {30 / full['parse_s']:.0f}x")
    return 0 if full["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
