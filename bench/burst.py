"""Burst: many uploads at once against a provider concurrency limit; none may fail because of throttling.

Every upload is a job of the emulator's generation time; the provider runs at most `--limit` at once and
answers 429 beyond that. The ideal wall time is jobs / limit x (queue + generation) seconds; the target (issue 7)
is within 1.15x of it, with no image paid for twice.
Run: `.venv/bin/python bench/burst.py [--jobs 500] [--limit 5] [--generation-seconds 3]` (or `make burst`).

What this measures is whether the pipeline keeps the provider's slots busy, so local mode's own CPU must not be the
bottleneck: all of AWS (moto), every function and the emulator share one Python process here, about 0.4 to 0.65 s of
CPU per job. Hence 3 s per video by default (at 1 s, five slots finish a job every 0.24 s, faster than one core can
run one) and Lambda memory limits off unless `--memory-limits` (tracemalloc, which enforces them in every test and in
`make demo`, taxes each allocation about 3x). The table prints the CPU share so a CPU-bound run shows itself.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter

from img2video_local.emulator import EmulatorConfig
from img2video_local.runtime import LocalPipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--generation-seconds", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--memory-limits", action="store_true", help="enforce each function's MemorySize (tracemalloc: about 3x the CPU)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (160, 128), (90, 120, 200)).save(buffer, format="JPEG")
    image = buffer.getvalue()
    queue_seconds = 0.2
    config = EmulatorConfig(
        generation_seconds=args.generation_seconds, queue_seconds=queue_seconds, fps=2, concurrency=args.limit, render_workers=2
    )
    keys = {f"incoming/burst/{i:04d}.jpg" for i in range(args.jobs)}
    with LocalPipeline(
        parameters={"MaxWaitMinutes": "30"}, emulator_config=config, memory_limits=args.memory_limits, submit_retry_max_seconds=None
    ) as local:
        started, cpu_started = time.monotonic(), time.process_time()
        for key in sorted(keys):
            local.upload(key.replace(".jpg", ".txt"), b"burst")
            local.upload(key, image)
        received = local.wait_for_notices(keys, args.timeout)
        wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
        seen = dict(local.emulator.requests_seen)
        submissions = Counter(s["image"] for s in local.emulator.submissions)
    outcomes = Counter((r.notice["error"] or {}).get("code", "succeeded") for r in received)
    ideal = args.jobs / args.limit * (queue_seconds + args.generation_seconds)
    rows = [
        ("jobs", args.jobs),
        ("provider concurrency limit", args.limit),
        ("generation seconds per job", args.generation_seconds + queue_seconds),
        ("notices received", len(received)),
        ("succeeded", outcomes.get("succeeded", 0)),
        ("failed (any reason)", sum(v for k, v in outcomes.items() if k != "succeeded")),
        ("429 answers from the provider", seen["throttled"]),
        ("paid submissions", sum(submissions.values())),
        ("images submitted more than once", sum(1 for v in submissions.values() if v > 1)),
        ("wall time s", f"{wall:.1f}"),
        ("ideal s (jobs / limit x generation)", f"{ideal:.1f}"),
        ("wall / ideal", f"{wall / ideal:.2f}"),
        ("local mode CPU s per job", f"{cpu / args.jobs:.2f}"),
        ("local mode CPU / wall", f"{cpu / wall:.2f}"),
        ("memory limits enforced", "yes" if args.memory_limits else "no (--memory-limits)"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'burst':<{width}}  value")
    print("-" * (width + 10))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for code, count in sorted(outcomes.items()):
        if code != "succeeded":
            example = next(r.notice["error"]["message"] for r in received if (r.notice["error"] or {}).get("code") == code)
            print(f"failed {code} x{count}: {example[:200]}")
    ok = len(received) == args.jobs and outcomes.get("succeeded", 0) == args.jobs
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
