"""Run every benchmark and print its figures (``make bench``)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_parse.py", "bench_extract.py", "bench_stages.py"]

rc = 0
for name in BENCHES:
    print(f"== {name}", flush=True)
    rc |= subprocess.run([sys.executable, str(HERE / name)]).returncode
sys.exit(rc)
