"""Generate a large, valid catalogue (default 600 bases x 6 tasks) for parse benchmarks and tests."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

SIMS7_TASKS = [
    ("snapshot", {"filter": "snapshot", "schedule": "0 18 * * 0"}),
    ("changed_data", {"filter": "changed_data", "schedule": "0 18 * * 1-5", "catchup": True}),
    ("attendance_all", {"filter": "attendance", "attendance": "all_current", "months": 3, "schedule": "30 18 * * 5"}),
    ("attendance_unauth", {"filter": "attendance", "attendance": "unauthorised_current", "months": 1,
                           "schedule": "45 18 * * 1-5"}),
    ("attainment", {"filter": "attainment", "hierarchies": ["B2B KS2"], "schedule": "0 19 * * 5"}),
    ("lac_snapshot", {"filter": "snapshot", "group": {"type": "lac"}, "schedule": "15 18 * * 1-5"}),
]
PRIMARY_TASKS = [
    ("snapshot", {"filter": "snapshot", "schedule": "0 18 * * 0"}),
    ("changed_data", {"filter": "changed_data", "schedule": "0 18 * * 1-5", "catchup": True}),
    ("attendance_changed", {"filter": "attendance", "attendance": "changed", "months": 1, "schedule": "30 18 * * 1-5"}),
    ("lac_snapshot", {"filter": "snapshot", "group": {"type": "lac"}, "schedule": "15 18 * * 1-5"}),
    ("leavers", {"filter": "snapshot", "group": {"type": "leavers"}, "schedule": "0 20 * * 5"}),
    ("changed_data_ks", {"filter": "changed_data", "group": {"type": "ncy", "ncys": ["6"]}, "schedule": "0 21 * * 1-5"}),
]


def generate(n_bases: int = 600, tasks_per_base: int = 6, la_code: str = "886") -> dict:
    """A catalogue where every task owns one base: n_bases * tasks_per_base DAGs. Every 4th base is SIMS Primary."""
    bases, tasks = [], []
    for i in range(n_bases):
        dfe = f"{la_code}{1000 + i:04d}"
        primary = i % 4 == 3
        base = {"dfe": dfe, "name": f"School {dfe}", "kind": "sims_primary" if primary else "sims7",
                "conn_id": f"{'sims_primary' if primary else 'sims7'}_{dfe}"}
        if primary:
            base["migrated_on"] = "2026-07-20"
        bases.append(base)
        for key, spec in (PRIMARY_TASKS if primary else SIMS7_TASKS)[:tasks_per_base]:
            task = {"key": key, "name": f"{key} {dfe}", "group": {"type": "ncy", "ncys": "all"},
                    "start_date": "2026-09-01", "bases": [dfe]}
            task.update(spec)
            tasks.append(task)
    return {"version": 1, "la": {"code": la_code, "name": f"Generated LA ({n_bases} bases)",
                                 "timezone": "Europe/London"}, "bases": bases, "tasks": tasks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--bases", type=int, default=600)
    ap.add_argument("--tasks", type=int, default=6)
    args = ap.parse_args(argv)
    import yaml

    args.out.write_text(yaml.safe_dump(generate(args.bases, args.tasks), sort_keys=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
