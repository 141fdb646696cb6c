"""Retake the README's screenshots: the DAG list, a DAG's docs, a run, its task log and the asset graph.

    .venv/bin/python docs/screenshots/take.py [--out docs/screenshots]

Starts `b2b airflow` (what `make airflow` runs) on a scratch home under `.b2b/screenshots`
with free loopback ports, runs one school's snapshot through the real scheduler, then drives
Debian's Chromium (/usr/bin/chromium; `make chromium` installs it; no browser is downloaded)
with Playwright. Everything it starts is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAG = "b2b__8862001__snapshot"
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    import requests

    from b2b.cli.airflow_env import api_server_up, stop_process_tree, wait_for

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: run `make chromium` (Debian's chromium package)")
    home = ROOT / ".b2b" / "screenshots"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = _free_port()
    env = dict(os.environ, B2B_HOME=str(home), AIRFLOW_HOME=str(home / "airflow"),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    for k in ("B2B_DATABASE_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        env.pop(k, None)
    log = open(home / "standalone.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "b2b.cli", "airflow", "--port", str(port),
                             "--simulator-port", str(_free_port())], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: api_server_up(base), 300, "the api-server")
        password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        token = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password},
                              timeout=30).json()["access_token"]
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        wait_for(lambda: http.get(f"{base}/api/v2/dags/{DAG}", timeout=10).ok, 300, "the DAGs to be parsed")
        http.patch(f"{base}/api/v2/dags/{DAG}", json={"is_paused": False}, timeout=30).raise_for_status()
        http.post(f"{base}/api/v2/dags/{DAG}/dagRuns", timeout=30,
                  json={"logical_date": "2026-10-04T17:00:00Z", "dag_run_id": "screenshot"}).raise_for_status()
        wait_for(lambda: http.get(f"{base}/api/v2/dags/{DAG}/dagRuns/screenshot", timeout=10).json()["state"]
              == "success", 600, "the snapshot run")
        http.patch(f"{base}/api/v2/dags/{DAG}", json={"is_paused": True}, timeout=30)
        asset = next(a for a in http.get(f"{base}/api/v2/assets", params={"limit": 100}, timeout=30).json()["assets"]
                     if a["name"] == "b2b_conflicts")
        shots(base, token, args.out, asset["id"])
    finally:
        stop_process_tree(proc.pid)
        log.close()
        subprocess.run([sys.executable, "-m", "b2b.cli", "db", "stop", "--all"], cwd=ROOT, env=env, check=False)
    return 0


def shots(base: str, token: str, out: Path, asset_id: int) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        ctx.add_cookies([{"name": "_token", "value": token, "url": base}])
        page = ctx.new_page()

        def take(url: str, name: str, click: str | None = None) -> None:
            page.goto(url, wait_until="networkidle")
            if click:
                button = page.get_by_role("button", name=click)
                (button if button.count() else page.get_by_text(click)).first.click()
                page.wait_for_timeout(1500)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / name))
            print(f"{out / name}: {(out / name).stat().st_size // 1024} KB")

        take(f"{base}/dags", "dag-list.png")
        take(f"{base}/dags/{DAG}", "dag-docs.png", click="Dag Docs")
        take(f"{base}/dags/{DAG}/runs/screenshot", "run.png")
        # the one task of a run (TASK_GRANULARITY=run): its log has a section per stage
        take(f"{base}/dags/{DAG}/runs/screenshot/tasks/run", "run-log.png")
        take(f"{base}/assets/{asset_id}", "assets.png")
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
