"""Polls, state transitions and notice delay per job: the WaitPolicy against every fixed interval, per provider-hint regime.

A seeded simulation of the wait loop with the real WaitPolicy and plan_from_history (layers/img2video/img2video/core/wait_policy.py).
Workload: a job's generation time depends on its resolution and duration (15 s + 6 s per second of video, x0.6 at
540p, x1.8 at 1080p) with a log-normal spread (sigma 0.25); off-peak jobs add a queue wait of 10 min to 3 h. Each kind
of job (resolution, duration, off-peak) has a history of 128 earlier jobs of the same distribution, as the jobs table
keeps it. Provider hints: `eta` within +-10 % ("accurate"), `eta` off by up to +-50 %, `progress_percent` only
(linear in time), or none. For each fixed interval T in {5, 10, 15, 30, 60} s the policy runs with PollMinSeconds = T
and must be Pareto-better: fewer polls at no more mean delay, or less delay at no more polls. Each poll is 3 state
transitions (the wait, CheckVideoTask, IsVideoReady?).

"webhook on" runs the same jobs with Novita's webhook (DESIGN section 4): it arrives WEBHOOK_LATENCY after the task's
end for 90 % of the jobs and never for the rest; each wait is a callback that the webhook ends (2 transitions: the wait
and IsVideoReady?). The kind's history says its webhooks arrive, so the first poll is put off until the job is surely
done (wait_policy.webhook_first_wait); the polls after it follow the policy as without a webhook. Its delay is from the
task's end to the wait ending. Run: `.venv/bin/python bench/polling.py`; exits 1 if any row is not Pareto-better.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "img2video"))

from img2video.core.wait_policy import Plan, WaitPolicy, webhook_first_wait

TRANSITIONS_PER_POLL = 3
INTERVALS = (5, 10, 15, 30, 60)
RESOLUTION_FACTOR = {"540p": 0.6, "720p": 1.0, "1080p": 1.8}
DURATIONS = (2, 4, 5, 8, 10)
REGIMES = {"eta accurate": ("eta", 0.1), "eta +-50 %": ("eta", 0.5), "progress only": ("progress", 0.0), "no hints": ("none", 0.0)}
Kind = tuple[str, int, bool]
WEBHOOK_LATENCY = 0.3  # Novita's POST and the Webhook function's confirmation, seconds
WEBHOOK_LOST = 0.1


def draw(rng: random.Random, off_peak: bool) -> tuple[Kind, float]:
    resolution, duration = rng.choice(list(RESOLUTION_FACTOR)), rng.choice(DURATIONS)
    seconds = (15 + 6 * duration * RESOLUTION_FACTOR[resolution]) * math.exp(rng.gauss(0, 0.25))
    if off_peak:
        seconds += rng.uniform(600, 10800)
    return (resolution, duration, off_peak), seconds


def run_job(
    seconds: float, policy: WaitPolicy | None, interval: int, hints: str, noise: float, plan: Plan | None, first: int, rng: random.Random
) -> tuple[int, float]:
    """(polls, delay from the task's end to the poll that sees it) for one job."""
    t, polls, wait = float(first), 0, first
    while True:
        polls += 1
        if t >= seconds:
            return polls, t - seconds
        if policy is None:  # a fixed interval
            wait = interval
        else:
            left = seconds - t
            eta = left * rng.uniform(1 - noise, 1 + noise) if hints == "eta" else None
            progress = 100 * t / seconds if hints == "progress" else None
            wait = policy.next_wait(wait, eta=eta, progress_percent=progress, elapsed_seconds=t, plan=plan, polls=polls)
        t += wait


def run_job_with_webhook(
    seconds: float, policy: WaitPolicy, hints: str, noise: float, plan: Plan | None, first: int, rng: random.Random, lost: bool
) -> tuple[int, float, bool]:
    """(polls, delay from the task's end to the wait that ends, whether the webhook ended it) for one job."""
    webhook = None if lost else seconds + WEBHOOK_LATENCY
    t, polls, wait, waited_from = float(first), 0, first, 0.0
    while True:
        if webhook is not None and waited_from < webhook <= t:
            return polls, webhook - seconds, True
        polls += 1
        if t >= seconds:
            return polls, t - seconds, False
        left = seconds - t
        eta = left * rng.uniform(1 - noise, 1 + noise) if hints == "eta" else None
        progress = 100 * t / seconds if hints == "progress" else None
        wait = policy.next_wait(wait, eta=eta, progress_percent=progress, elapsed_seconds=t, plan=plan, polls=polls)
        waited_from, t = t, t + wait


def summary(results: list[tuple[int, float]]) -> tuple[float, float, float]:
    delays = sorted(delay for _, delay in results)
    return statistics.mean(polls for polls, _ in results), statistics.mean(delays), delays[int(0.95 * len(delays))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()
    header = (
        f"{'workload':<9} {'hints':<14} {'T s':>4} | {'fixed polls':>11} {'delay':>6} | {'policy polls':>12} {'transitions':>11} "
        f"{'delay':>6} {'p95':>6} | verdict       | {'webhook on: polls':>17} {'transitions':>11} {'delay':>6} {'p95':>6}"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for off_peak in (False, True):
        rng = random.Random(args.seed + off_peak)
        history: dict[Kind, list[float]] = {}
        while min((len(v) for v in history.values()), default=0) < 128 or len(history) < 15:
            kind, seconds = draw(rng, off_peak)
            history.setdefault(kind, []).append(seconds)
        jobs = [draw(rng, off_peak) for _ in range(3000)]
        workload = "off-peak" if off_peak else "normal"
        for regime, (hints, noise) in REGIMES.items():
            for interval in INTERVALS:
                policy = WaitPolicy(interval, max(interval, 900 if off_peak else 60))
                plans = {kind: policy.plan(samples[:128]) for kind, samples in history.items()}
                fixed, adaptive, hooked = [], [], []
                for index, (kind, seconds) in enumerate(jobs):
                    fixed.append(run_job(seconds, None, interval, "none", 0, None, interval, random.Random(index)))
                    plan = plans[kind]
                    adaptive.append(run_job(seconds, policy, interval, hints, noise, plan, policy.first_wait(plan), random.Random(index)))
                    lost = random.Random(args.seed * 7919 + index).random() < WEBHOOK_LOST
                    arrivals = [random.Random(index * 131 + n).random() >= WEBHOOK_LOST for n in range(len(history[kind][:128]))]
                    first = policy.first_wait(plan, webhook_first_wait(history[kind][:128], arrivals))
                    hooked.append(run_job_with_webhook(seconds, policy, hints, noise, plan, first, random.Random(index), lost))
                fixed_polls, fixed_delay, _ = summary(fixed)
                polls, delay, p95 = summary(adaptive)
                better = polls <= fixed_polls and delay <= fixed_delay and (polls < fixed_polls or delay < fixed_delay)
                failures += not better
                hook_polls, hook_delay, hook_p95 = summary([(p, d) for p, d, _ in hooked])
                hook_transitions = statistics.mean(TRANSITIONS_PER_POLL * p + 2 * by_webhook for p, _, by_webhook in hooked)
                print(
                    f"{workload:<9} {regime:<14} {interval:>4} | {fixed_polls:>11.1f} {fixed_delay:>6.1f} | {polls:>12.1f} "
                    f"{TRANSITIONS_PER_POLL * polls:>11.1f} {delay:>6.1f} {p95:>6.1f} | {'Pareto-better' if better else 'NOT better   '} | "
                    f"{hook_polls:>17.2f} {hook_transitions:>11.1f} {hook_delay:>6.1f} {hook_p95:>6.1f}"
                )
        print()
    # For reference: the first jobs of a kind, before any history (no hints): geometric backoff from PollMinSeconds.
    print("no history yet, no hints (geometric backoff from 5 s, not part of the verdict):")
    for off_peak in (False, True):
        rng = random.Random(7 + off_peak)
        jobs = [draw(rng, off_peak) for _ in range(3000)]
        policy = WaitPolicy(5, 900 if off_peak else 60)
        cold = summary([run_job(s, policy, 5, "none", 0, None, policy.first_wait(None), random.Random(i)) for i, (_, s) in enumerate(jobs)])
        print(f"  {'off-peak' if off_peak else 'normal':<9} polls {cold[0]:.1f}, delay mean {cold[1]:.1f} s, p95 {cold[2]:.1f} s")
    print(f"\n{failures} rows not Pareto-better than their fixed interval")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
