"""The webhook fast path in local mode: polls and task-result calls per job, and the delay from the task's end to the
execution leaving its wait, with a share of the webhooks lost.

The whole pipeline runs (moto's Step Functions with the real ASL, the real handlers, the Novita emulator delivering
webhooks to the local Function URL). Uploads arrive one every --every seconds, so the jobs overlap as real traffic does.
The first --warmup jobs are run and left out of the figures: a stack trusts webhooks for a kind of job only once most
of its last jobs were told by one (wait_policy.webhook_first_wait), which a fresh stack has not seen yet; their figures
are printed apart. Detection delay: from the emulator's end of the task (its generation time is up and its video is
rendered) to the execution entering StoreVideo. Task-result calls: every GET the emulator answered, split into the polls'
and the rest (the Webhook function's confirmations, and Store's reads when no good video URL was left on the task's item).

Run: `.venv/bin/python bench/webhook.py [--jobs 100] [--lost 0.1] [--seed 7]`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from typing import Any

import boto3
from img2video_local.cli import SAMPLES
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else float("nan")


def run(local: LocalPipeline, prefix: str, jobs: int, every: float, image: bytes) -> set[str]:
    images = set()
    for index in range(jobs):
        key = f"incoming/{prefix}/{index:03d}.jpg"
        local.upload(
            key.replace(".jpg", ".json"), json.dumps({"prompt": "the tide comes in", "duration": 2, "resolution": "540p"}).encode()
        )
        local.upload(key, image)
        images.add(key)
        time.sleep(every)
    return images


def execution_arn(local: LocalPipeline, job_id: str) -> str:
    return local.stack.id("VideoJobStateMachine").replace(":stateMachine:", ":execution:") + ":" + job_id


def measure(local: LocalPipeline, images: set[str], timeout: float) -> dict[str, Any]:
    received = [r.notice for r in local.wait_for_notices(images, timeout)]
    delays, by_webhook, by_poll, polls = [], [], [], []
    for notice in received:
        task = local.emulator.tasks[notice["task_id"]]
        events = local.sfn.get_execution_history(executionArn=execution_arn(local, notice["job_id"]), maxResults=1000)["events"]
        [stored] = [e for e in events if e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == "StoreVideo"][:1]
        delay = stored["timestamp"].timestamp() - local.emulator.end_time(task)
        delays.append(delay)
        told_by_webhook = any(e["type"] == "TaskSucceeded" and "dynamodb" in json.dumps(e, default=str) for e in events)
        (by_webhook if told_by_webhook else by_poll).append(delay)
        polls.append(notice["timings"]["polls"])
    return {"notices": received, "delays": delays, "webhook": by_webhook, "poll": by_poll, "polls": polls}


def explain(local: LocalPipeline, key: str, notices: int) -> None:
    """What became of a job that did not end in exactly one notice: its item in the jobs table and its execution."""
    print(f"!! {key}: {notices} notices")
    items = boto3.client("dynamodb", region_name=REGION).query(
        TableName=local.stack.id("JobsTable"),
        IndexName="by-source",
        KeyConditionExpression="source_key = :key",
        ExpressionAttributeValues={":key": {"S": key}},
    )["Items"]
    for item in items:
        job = {name: next(iter(value.values())) for name, value in item.items()}
        print(f"   job item: {json.dumps(job, default=str)[:600]}")
        arn = execution_arn(local, job["job_id"])
        try:
            status = local.sfn.describe_execution(executionArn=arn)["status"]
            events = local.sfn.get_execution_history(executionArn=arn, maxResults=1000, reverseOrder=True)["events"][:8]
        except Exception as exc:
            print(f"   execution {job['job_id']}: {type(exc).__name__}")
            continue
        print(f"   execution {job['job_id']}: {status}; its last events, newest first:")
        for event in events:
            details = {k: v for k, v in event.items() if k.endswith("Details")}
            print(f"     {event['type']} {json.dumps(details, default=str)[:300]}")


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<34} {'-':>6}"
    return (
        f"  {label:<34} {len(values):>6} {statistics.mean(values):>7.2f} {percentile(values, 0.5):>7.2f} "
        f"{percentile(values, 0.95):>7.2f} {max(values):>7.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--lost", type=float, default=0.1, help="share of tasks whose webhook never arrives")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between uploads")
    parser.add_argument("--generation", type=float, default=3.0, help="the emulator's generation time, seconds")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    image = (SAMPLES / "sunset.jpg").read_bytes()
    config = EmulatorConfig(generation_seconds=args.generation, fps=8, faults=Faults.parse(f"webhook_lost={args.lost},seed={args.seed}"))
    with LocalPipeline(emulator_config=config) as local:
        warm = measure(local, run(local, "warmup", args.warmup, args.every, image), 120)
        counted_before = dict(local.emulator.requests_seen), dict(local.functions.invocations), dict(local.emulator.webhooks)
        images = run(local, "bench", args.jobs, args.every, image)
        result = measure(local, images, 300)
        time.sleep(1)
        requests, invocations, webhooks = (
            dict(local.emulator.requests_seen),
            dict(local.functions.invocations),
            dict(local.emulator.webhooks),
        )
        answer_times = [e["seconds"] for e in local.emulator.webhook_log if e["kind"] == "delivered"]
        notices_per_job = {key: sum(1 for r in local.notices if r.notice["source"]["key"] == key) for key in images}
        for key in sorted(key for key, count in notices_per_job.items() if count != 1):
            explain(local, key, notices_per_job[key])
        paid = [s["image"] for s in local.emulator.submissions]
    jobs = len(result["notices"])

    def since(counts: dict[str, int], before: dict[str, int], name: str) -> int:
        return counts.get(name, 0) - before.get(name, 0)

    results = since(requests, counted_before[0], "result")
    poll_calls = since(invocations, counted_before[1], "PollFunction")
    lost = since(webhooks, counted_before[2], "lost")
    print(f"{jobs} jobs measured after {args.warmup} warm-up jobs, one upload every {args.every} s")
    print(f"webhooks lost: {lost} ({lost / max(1, jobs):.0%})")
    print(f"notices per job: {sorted(set(notices_per_job.values()))}; paid submissions per job: {len(paid) / len(set(paid)):.2f}")
    print(f"succeeded: {sum(n['event'] == 'video.succeeded' for n in result['notices'])}\n")
    print(f"  {'per job':<34} {'value':>6}")
    print(f"  {'polls':<34} {statistics.mean(result['polls']):>6.2f}")
    print(f"  {'task-result calls, all':<34} {results / jobs:>6.2f}")
    print(f"  {'  by polls':<34} {poll_calls / jobs:>6.2f}")
    print(f"  {'  by the Webhook function and Store':<34} {(results - poll_calls) / jobs:>6.2f}   (confirmations; fresh video URLs)\n")
    print(f"  {'detection delay (s)':<34} {'jobs':>6} {'mean':>7} {'p50':>7} {'p95':>7} {'max':>7}")
    print(row("all jobs", result["delays"]))
    print(row("told by their webhook", result["webhook"]))
    print(row("told by a poll (webhook lost)", result["poll"]))
    print(row("warm-up jobs (not counted above)", warm["delays"]))
    print(f"\n  {'webhook answered in (s)':<34} {'calls':>6} {'mean':>7} {'p50':>7} {'p95':>7} {'max':>7}")
    print(row("delivered webhooks", answer_times))
    print(f"  warm-up polls per job: {statistics.mean(warm['polls']):.2f}")
    ok = jobs == args.jobs and set(notices_per_job.values()) == {1} and len(paid) == len(set(paid))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
