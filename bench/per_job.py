"""What one job costs on AWS, counted in local mode: the AWS calls each function makes (by operation), the Lambda
invocations, and the Step Functions state transitions (the states entered, which is what AWS bills), per job.

Run: `.venv/bin/python bench/per_job.py [--jobs 10]`. The emulator answers with its usual eta and progress, so the
number of polls is the one the wait policy picks for a 3 s generation; in AWS a longer generation adds, per poll,
one Poll invocation, 3 state transitions, one DynamoDB UpdateItem and one Secrets Manager read at most (cached).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from typing import Any

from botocore.client import BaseClient
from img2video_local.aws_faults import current_function
from img2video_local.cli import SAMPLES
from img2video_local.emulator import EmulatorConfig
from img2video_local.runtime import LocalPipeline

# Calls local mode itself makes from a handler's thread (to enforce SNS's and SQS's message-size limits): not the handler's.
LOCAL_CHECKS = {"sns:GetTopicAttributes", "sqs:GetQueueAttributes"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    calls: Counter[tuple[str, str]] = Counter()
    original = BaseClient._make_api_call

    def counted(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        function, name = current_function(), f"{self.meta.service_model.service_name}:{operation}"
        if function and name not in LOCAL_CHECKS:
            calls[(function, name)] += 1
        return original(self, operation, params)

    BaseClient._make_api_call = counted  # type: ignore[method-assign]
    images = {f"incoming/bench/{index}.jpg" for index in range(args.jobs)}
    image = (SAMPLES / "sunset.jpg").read_bytes()
    with LocalPipeline(emulator_config=EmulatorConfig(generation_seconds=3)) as local:
        for key in sorted(images):
            local.upload(key.replace(".jpg", ".txt"), b"the tide comes in")
            local.upload(key, image)
        received = local.wait_for_notices(images, 300)
        machine = local.stack.id("VideoJobStateMachine")
        transitions = polls = 0
        for execution in local.sfn.list_executions(stateMachineArn=machine)["executions"]:
            history = local.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
            transitions += sum(1 for event in history if event["type"].endswith("StateEntered"))
        invocations = dict(local.functions.invocations)
        polls = sum(r.notice.get("timings", {}).get("polls", 0) for r in received)
    BaseClient._make_api_call = original  # type: ignore[method-assign]
    jobs = len(received)
    print(f"{jobs} jobs ({sum(r.notice['event'] == 'video.succeeded' for r in received)} succeeded), {polls / jobs:.1f} polls per job\n")
    print(f"{'function':<18} {'AWS call':<42} {'per job':>8}")
    for (function, operation), count in sorted(calls.items()):
        print(f"{function:<18} {operation:<42} {count / jobs:>8.2f}")
    print(f"\n{'AWS calls per job':<61} {sum(calls.values()) / jobs:>8.2f}")
    print(f"{'Lambda invocations per job':<61} {sum(invocations.values()) / jobs:>8.2f}   {invocations}")
    print(f"{'Step Functions state transitions per job':<61} {transitions / jobs:>8.2f}")
    return 0 if jobs == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
