"""Cold-start cost: each handler's import against `import boto3` plus one client, in fresh interpreters, same run.

Run: `.venv/bin/python bench/import_time.py [--runs 7]`. Each figure is the median of fresh interpreters, run in
turns (baseline, then every handler, then again) so that a busy machine slows all of them alike. Handlers are
imported as the stack runs them: tracing off by default (`Tracing=false`, so no X-Ray SDK; the last column imports
them with tracing on, for comparison), and the layer's own modules compiled on every import, as on Lambda, where
/opt is read-only and the build ships no bytecode for them (each run imports a fresh copy of the package, with
PYTHONDONTWRITEBYTECODE set). Installed packages (boto3, Powertools) keep the bytecode pip wrote for them, as in
the layer. Target (issues 10 and 20): every handler within 1.3x the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANDLER = """
import importlib.util, sys, time
sys.path.insert(0, {layer!r})
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(time.perf_counter() - started)
"""
BASELINE = """
import time
started = time.perf_counter()
import boto3
boto3.client("s3")
print(time.perf_counter() - started)
"""


def timed(code: str, tracing: bool = False) -> float:
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip()) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    # the package without its __pycache__ folders: compiled on each import, as on Lambda
    layer = tempfile.mkdtemp(prefix="img2video-layer-")
    shutil.copytree(ROOT / "layers" / "img2video" / "img2video", Path(layer) / "img2video", ignore=shutil.ignore_patterns("__pycache__"))
    handlers = sorted(path.name for path in (ROOT / "functions").iterdir() if (path / "app.py").exists())
    codes = {name: HANDLER.format(layer=layer, path=str(ROOT / "functions" / name / "app.py")) for name in handlers}
    samples: dict[str, list[float]] = {"baseline": [], **{name: [] for name in handlers}, **{f"{n}+xray": [] for n in handlers}}
    for _ in range(args.runs):
        samples["baseline"].append(timed(BASELINE))
        for name in handlers:
            samples[name].append(timed(codes[name]))
            samples[f"{name}+xray"].append(timed(codes[name], tracing=True))
    base = statistics.median(samples["baseline"])
    print(f"import boto3 + one client: {base:.0f} ms (median of {args.runs})\n")
    print(f"{'handler':<10} {'import ms':>10} {'x boto3':>8} {'<= 1.3x':>8} {'tracing on ms':>14} {'x boto3':>8}")
    print("-" * 64)
    worst = 0.0
    for name in handlers:
        median, traced = statistics.median(samples[name]), statistics.median(samples[f"{name}+xray"])
        worst = max(worst, median / base)
        fits = "yes" if median / base <= 1.3 else "NO"
        print(f"{name:<10} {median:>10.0f} {median / base:>8.2f} {fits:>8} {traced:>14.0f} {traced / base:>8.2f}")
    return 0 if worst <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
