"""Chaos run (DESIGN section 3 as evidence): N jobs under random mixed provider and AWS faults; exits 1 on any broken promise.

Run: `.venv/bin/python bench/chaos.py [--jobs 200] [--seed 7] [--faults SPEC]` (or `make chaos`).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from img2video_local.chaos import DEFAULT_AWS_FAULTS, DEFAULT_FAULTS, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--faults", default=DEFAULT_FAULTS)
    parser.add_argument(
        "--aws-faults", default=DEFAULT_AWS_FAULTS, help="AWS faults in the handlers' boto3 calls (local/img2video_local/aws_faults.py)"
    )
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    report = run_chaos(args.jobs, args.seed, args.faults, args.timeout, args.aws_faults)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
