"""`img2video jobs` against a table of 10,000 jobs: queries on the by-state and by-source indexes, never a scan.

Run: `.venv/bin/python bench/jobs_query.py [--jobs 10000]`. The table lives in the embedded stack (moto) and the
commands reach it through its loopback endpoint, as `img2video local jobs` does. moto answers a query by walking
its index in Python, so the times are local mode's; the requests and items read are what DynamoDB would serve
(a query reads only the matching items, 1 MB per page).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta

from botocore.client import BaseClient
from img2video_local.commands import attempts_of, jobs_in, parse_since
from img2video_local.emulator import EmulatorConfig
from img2video_local.runtime import LocalPipeline
from img2video_local.up import serving

STATES = ("succeeded",) * 14 + ("failed",) * 3 + ("running", "held", "cancelled")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    requests: list[str] = []
    main_thread = threading.get_ident()
    original = BaseClient._make_api_call

    def counted(self: BaseClient, operation: str, params: dict) -> object:  # type: ignore[type-arg]
        if threading.get_ident() == main_thread:  # the command's calls, not local mode's pollers'
            requests.append(operation)
        return original(self, operation, params)

    with LocalPipeline(emulator_config=EmulatorConfig()) as local, serving(local) as stack:
        dynamodb = stack.client("dynamodb")
        start = datetime.now(UTC) - timedelta(days=7)
        for first in range(0, args.jobs, 25):
            items = []
            for index in range(first, min(first + 25, args.jobs)):
                stamp = (start + timedelta(seconds=index * 60)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                items.append(
                    {
                        "PutRequest": {
                            "Item": {
                                "job_id": {"S": f"img{index}-0123456789"},
                                "attempt": {"N": "1"},
                                "state": {"S": STATES[index % len(STATES)]},
                                "rank": {"N": "9"},
                                "source_key": {"S": f"incoming/bench/img{index % 2500}.jpg"},
                                "created_at": {"S": stamp},
                                "updated_at": {"S": stamp},
                            }
                        }
                    }
                )
            dynamodb.batch_write_item(RequestItems={stack.jobs_table: items})
        BaseClient._make_api_call = counted  # type: ignore[method-assign]
        print(f"{args.jobs} jobs in the table\n")
        print(f"{'command':<48} {'requests':>8} {'items':>7} {'seconds':>8}")
        cases = [
            ("jobs --state failed", lambda: jobs_in(stack, ("failed",))),
            ("jobs --state failed --since 1d", lambda: jobs_in(stack, ("failed",), parse_since("1d"))),
            ("jobs --state running", lambda: jobs_in(stack, ("running",))),
            ("status incoming/bench/img7.jpg (4 attempts)", lambda: attempts_of(stack, "incoming/bench/img7.jpg")),
        ]
        for name, run in cases:
            requests.clear()
            began = time.perf_counter()
            found = run()
            elapsed = time.perf_counter() - began
            print(f"{name:<48} {len(requests):>8} {len(found):>7} {elapsed:>8.3f}   ({', '.join(sorted(set(requests)))})")
        BaseClient._make_api_call = original  # type: ignore[method-assign]
    return 0


if __name__ == "__main__":
    sys.exit(main())
