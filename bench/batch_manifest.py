"""Accepting a batch manifest of many lines, measured in local mode: wall time until every line's job has its
execution, AWS calls and state transitions per line, and the batch's own figures against AWS's limits (history
events, the largest state a step passes, each function's worst case).

Run: `.venv/bin/python bench/batch_manifest.py [--lines 10000]`. The jobs are held by a daily limit of one submission
(MaxSubmissionsPerDay=1), so what is measured is acceptance, not 10,000 generations; their waits happen in Wait
states, as on AWS. Calls are those local IAM checked (every call a function or a state machine makes); state
transitions are the batch execution's own plus its child executions' (2 per invocation of the lines step, 1 per
child's end), the jobs' own not included (see bench/per_job.py). Local mode holds one or two OS threads per waiting
job (moto_patches.one_thread_per_execution): at 10,000 lines that comes near Linux's default vm.max_map_count
(65,530 memory maps) and pid_max (32,768); stderr shows the jobs and threads each minute. docs/benchmarks.md has the
figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import warnings
from collections import Counter
from typing import Any

import boto3
from img2video.core.batch import CHUNK_BYTES, LINES_PER_CHUNK
from img2video.steps.batch import LINE_WORST_SECONDS, LINES_PREFIX
from img2video_local.cli import SAMPLES
from img2video_local.emulator import EmulatorConfig
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION

HISTORY_LIMIT = 25_000
PAYLOAD_LIMIT = 256 * 1024


def _calls_by_principal(used: Counter[tuple[str, str]]) -> Counter[str]:
    by: Counter[str] = Counter()
    for (statement, _action), count in used.items():
        by[statement.split("Role/", 1)[0]] += count
    return by


def _watch(local: LocalPipeline, started: float, stop: threading.Event) -> None:
    """Every minute, on stderr: the jobs' executions so far, the threads local mode holds and what the most of them
    are doing (one per waiting job is expected: moto_patches.one_thread_per_execution)."""
    while not stop.wait(60):
        jobs = _jobs_by_status(local).total()
        frames = sys._current_frames()
        doing = Counter(_innermost(frames[thread.ident]) for thread in threading.enumerate() if thread.ident in frames)
        held = f"{threading.active_count():,} threads: {doing.most_common(3)}"
        print(f"{time.monotonic() - started:6.0f} s: {jobs:,} jobs, {held}", file=sys.stderr)


def _jobs_by_status(local: LocalPipeline) -> Counter[str]:
    """The jobs' executions so far, by status."""
    pages = local.sfn.get_paginator("list_executions").paginate(stateMachineArn=local.stack.id("VideoJobStateMachine"))
    return Counter(execution["status"] for page in pages for execution in page["executions"])


def _innermost(frame: Any, depth: int = 3) -> str:
    names = []
    while frame is not None and len(names) < depth:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return " < ".join(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument(
        "--end-fast",
        action="store_true",
        help="jobs past the daily limit fail at once (SubmitWindowSeconds=60) instead of waiting for the next day, so "
        "local mode never holds thousands of executions at once",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    image = (SAMPLES / "sunset.jpg").read_bytes()
    images = 50  # the lines name 50 images in turn, with their own prompts
    manifest = "\n".join(
        json.dumps({"image": f"img{n % images}.jpg", "prompt": f"take {n}: the tide comes in", "tags": {"line": str(n)}})
        for n in range(1, args.lines + 1)
    ).encode()
    parameters = {"MaxSubmissionsPerDay": "1", **({"SubmitWindowSeconds": "60"} if args.end_fast else {})}
    with LocalPipeline(parameters=parameters, emulator_config=EmulatorConfig(generation_seconds=1)) as local:
        for n in range(images):
            local.upload(f"incoming/bench.batch/img{n}.jpg", image)
        policies = local.stack.policies
        before = Counter(policies.used)
        started = time.monotonic()
        local.upload("incoming/bench.batch/bench.batch.jsonl", manifest)
        stop_watching = threading.Event()
        threading.Thread(target=_watch, args=(local, started, stop_watching), daemon=True).start()
        sfn = local.sfn
        batch_arn = local.stack.id("BatchStateMachine")
        status, deadline = "", time.monotonic() + 3 * 3600
        while status != "SUCCEEDED" and time.monotonic() < deadline:
            time.sleep(2)
            executions = sfn.list_executions(stateMachineArn=batch_arn)["executions"]
            status = executions[0]["status"] if executions else ""
            if status in ("FAILED", "ABORTED", "TIMED_OUT"):
                break
        wall = time.monotonic() - started
        stop_watching.set()
        history = sfn.get_execution_history(executionArn=executions[0]["executionArn"], maxResults=1000)["events"]
        used = Counter(policies.used) - before
        by = _calls_by_principal(used)
        starts = sum(
            count for (statement, action), count in used.items() if "BatchFunctionRole" in statement and action == "states:startexecution"
        )
        invocations = sum(
            count
            for (statement, action), count in used.items()
            if "BatchStateMachineRole" in statement and action == "lambda:invokefunction"
        )
        jobs = _jobs_by_status(local)
        s3 = boto3.client("s3", region_name=REGION)
        listing = s3.list_objects_v2(Bucket=local.output_bucket, Prefix=LINES_PREFIX)["Contents"]
        chunks = json.loads(s3.get_object(Bucket=local.output_bucket, Key=listing[0]["Key"])["Body"].read())
        largest = max(len(json.dumps({"batch": {"batch_id": "x" * 40}, "lines": c["lines"]}).encode()) for c in chunks)
        entered = sum(1 for e in history if e["type"].endswith("StateEntered"))
        line_invocations = invocations - 2  # the read and the count are the parent's
        child_transitions = 2 * line_invocations + len(chunks)
    print(f"batch manifest of {args.lines:,} lines ({len(manifest) / 1e6:.1f} MB), status {status}")
    print()
    print("| measure | value | AWS limit |")
    print("|---|---:|---|")
    print(f"| wall time, upload to every line's job started (local mode, 2 cores) | {wall:.0f} s | |")
    print(f"| jobs started (StartExecution by the lines step) | {starts:,} | |")
    print(f"| the jobs' executions, by status | {', '.join(f'{n:,} {k}' for k, n in jobs.most_common())} | |")
    print(f"| chunks (child executions) | {len(chunks):,} (≤ {LINES_PER_CHUNK} lines, ≤ {CHUNK_BYTES // 1024} KiB each) | |")
    print(f"| invocations of the Batch function | {invocations:,} | |")
    print(f"| batch execution's history events | {len(history)} | {HISTORY_LIMIT:,} |")
    print(f"| largest state a step passes (one chunk) | {largest / 1024:.1f} KiB | {PAYLOAD_LIMIT // 1024} KiB |")
    print(f"| one line's worst case (every AWS call timing out) | {LINE_WORST_SECONDS:.0f} s | 900 s function timeout |")
    print(f"| state transitions per line (batch + children) | {(entered + child_transitions) / args.lines:.3f} | |")
    print(f"| AWS calls per line, all principals | {sum(by.values()) / args.lines:.2f} | |")
    for principal, count in sorted(by.items(), key=lambda item: -item[1]):
        print(f"| … by {principal} | {count / args.lines:.2f} | |")
    return 0 if status == "SUCCEEDED" and jobs.total() >= args.lines else 1


if __name__ == "__main__":
    raise SystemExit(main())
