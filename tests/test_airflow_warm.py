"""Issue 15: the scheduler pre-imports what export tasks import (LocalExecutor forks its workers
from the scheduler and each task from a worker), and nothing else is slowed: other Airflow
processes, DAG-file parsing and the `b2b` command import none of it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import sys; sys.argv = [{argv0!r}] + {args!r}; import airflow_local_settings; "
         "print(sorted(m for m in ('great_expectations', 'pandas', 'b2b.pipeline') if m in sys.modules))")


def _loaded(argv0: str, args: list[str], **env: str) -> str:
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]), **env)
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv0=argv0, args=args)], env=e, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("args", [["scheduler"], ["celery", "worker"]])
def test_the_processes_tasks_are_forked_from_start_with_the_tasks_modules_imported(args):
    assert _loaded("/venv/bin/airflow", args) == "['b2b.pipeline', 'great_expectations', 'pandas']"


@pytest.mark.parametrize("argv0,args,env", [
    ("/venv/bin/airflow", ["api-server"], {}),
    ("/venv/bin/airflow", ["dag-processor"], {}),
    ("/venv/bin/airflow", ["tasks", "test", "d", "t"], {}),
    ("/venv/bin/b2b", ["demo"], {}),
    ("/venv/bin/airflow", ["scheduler"], {"B2B_AIRFLOW_WARM": "0"}),
])
def test_no_other_process_pays_for_the_warm_up(argv0, args, env):
    assert _loaded(argv0, args, **env) == "[]"


def test_the_plugin_manager_skips_the_local_settings_file():
    """Airflow loads every .py of the plugins folder as a plugin module unless .airflowignore
    names it: the local settings must not be imported a second time under another name."""
    assert "airflow_local_settings.py" in (ROOT / "plugins" / ".airflowignore").read_text().split()


def test_warm_imports_reports_each_module():
    from b2b_operators.warm import WARM_MODULES, warm_imports

    took = warm_imports(("json", "no_such_module_b2b"))
    assert set(took) == {"json"} and "great_expectations" in WARM_MODULES


def test_b2b_airflow_gives_localexecutor_two_slots_per_core_unless_told(monkeypatch):
    from b2b.cli import airflow_env as af

    monkeypatch.delenv("AIRFLOW__CORE__PARALLELISM", raising=False)
    assert af.default_parallelism() == str(max(4, 2 * (os.cpu_count() or 2)))
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "12")
    assert af.default_parallelism() == "12"
