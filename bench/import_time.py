"""Cold-start cost: how long each handler module takes to import, in a fresh interpreter each time.

Run: `.venv/bin/python bench/import_time.py` (median of 5 fresh interpreters per handler).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = """
import importlib.util, os, sys, time
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
sys.path.insert(0, {layer!r})
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("app", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(time.perf_counter() - started)
"""


def main() -> None:
    layer = str(ROOT / "layers" / "img2video")
    print(f"{'handler':<10} {'import ms (median of 5)':>24} {'min ms':>8} {'max ms':>8}")
    print("-" * 54)
    for name in sorted(path.name for path in (ROOT / "functions").iterdir() if (path / "app.py").exists()):
        path = str(ROOT / "functions" / name / "app.py")
        runs = []
        for _ in range(5):
            out = subprocess.run([sys.executable, "-c", CODE.format(layer=layer, path=path)], capture_output=True, text=True, check=True)
            runs.append(float(out.stdout.strip()) * 1000)
        print(f"{name:<10} {statistics.median(runs):>24.0f} {min(runs):>8.0f} {max(runs):>8.0f}")


if __name__ == "__main__":
    main()
