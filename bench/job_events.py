"""Job events on EventBridge, measured in local mode: how many each job puts, by state, and how long after the state
change each reaches a consumer (an SQS queue behind a rule on the bus, as a user's automation would read them).

Run: `.venv/bin/python bench/job_events.py [--jobs 20]`. The delay is the queue's receipt time minus the event's
`changed_at` (when the step put it, right after recording the state); on AWS, EventBridge adds its own delivery
latency (typically well under a second) on top.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections import Counter, defaultdict

import boto3
from img2video.core.clock import parse_iso
from img2video_local.cli import SAMPLES
from img2video_local.emulator import EmulatorConfig
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    images = {f"incoming/bench/{index}.jpg" for index in range(args.jobs)}
    image = (SAMPLES / "sunset.jpg").read_bytes()
    by_job: dict[str, Counter[str]] = defaultdict(Counter)
    delays: dict[str, list[float]] = defaultdict(list)
    with LocalPipeline(emulator_config=EmulatorConfig(generation_seconds=3)) as local:
        sqs, events = boto3.client("sqs", region_name=REGION), boto3.client("events", region_name=REGION)
        queue = sqs.create_queue(QueueName="bench-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="bench", EventPattern=json.dumps({"source": ["img2video"]}))
        events.put_targets(Rule="bench", Targets=[{"Id": "q", "Arn": arn}])
        for key in sorted(images):
            local.upload(key.replace(".jpg", ".txt"), b"the tide comes in")
            local.upload(key, image)
        deadline = time.monotonic() + 300
        ended = 0
        while ended < args.jobs and time.monotonic() < deadline:
            for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                detail = json.loads(message["Body"])["detail"]
                by_job[detail["job_id"]][detail["state"]] += 1
                delays[detail["state"]].append(time.time() - parse_iso(detail["changed_at"]))
                ended += detail["state"] in ("succeeded", "failed", "cancelled")
    jobs = len(by_job)
    states = ("accepted", "held", "submitted", "running", "storing", "succeeded", "failed", "cancelled")
    print(f"{jobs} jobs, {sum(sum(c.values()) for c in by_job.values()) / max(jobs, 1):.1f} events per job\n")
    print(f"{'state':<10} {'per job':>8} {'delay p50 ms':>13} {'delay max ms':>13}")
    for state in states:
        count = sum(c[state] for c in by_job.values())
        if count:
            seen = delays[state]
            print(f"{state:<10} {count / jobs:>8.2f} {statistics.median(seen) * 1000:>13.0f} {max(seen) * 1000:>13.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
