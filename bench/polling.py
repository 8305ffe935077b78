"""Polls, state transitions and notice delay per job: the adaptive WaitPolicy against fixed-interval polling.

A seeded simulation of the wait loop with the real WaitPolicy, over generation times typical of VIDU
Q2 Turbo (20 s to 4 min) and of off-peak tasks (10 min to 3 h). The provider model reports `eta` with
±25 % error, `progress_percent` linear in time, or neither. Each loop turn costs 3 state transitions
(WaitForVideo, CheckVideoTask, IsVideoReady?). Run: `.venv/bin/python bench/polling.py`.
"""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "img2video"))

from img2video.wait_policy import WaitPolicy

TRANSITIONS_PER_POLL = 3
Strategy = Callable[[int | None, float | None, float | None, float], int]


def simulate(duration: float, strategy: Strategy, hints: str, rng: random.Random, first_wait: int) -> tuple[int, float]:
    """Return (polls, seconds between the task finishing and the poll that sees it)."""
    t, wait, polls = 0.0, first_wait, 0
    while True:
        t += wait
        polls += 1
        if t >= duration:
            return polls, t - duration
        remaining = duration - t
        eta = max(1.0, remaining * rng.uniform(0.75, 1.25)) if hints == "eta" else None
        progress = 100 * t / duration if hints == "progress" else None
        wait = strategy(wait, eta, progress, t)


def adaptive(policy: WaitPolicy) -> Strategy:
    return lambda previous, eta, progress, elapsed: policy.next_wait(previous, eta, progress, elapsed)


def fixed(seconds: int) -> Strategy:
    return lambda previous, eta, progress, elapsed: seconds


def main() -> None:
    rng = random.Random(20261124)
    scenarios = {
        "normal (20 s - 4 min)": ([rng.uniform(20, 240) for _ in range(2000)], WaitPolicy(5, 60)),
        "off-peak (10 min - 3 h)": ([rng.uniform(600, 10800) for _ in range(500)], WaitPolicy(5, 900)),
    }
    header = (
        f"{'workload':<24} {'provider hints':<15} {'strategy':<22} {'polls/job':>10} "
        f"{'transitions/job':>16} {'delay mean s':>13} {'delay p95 s':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, (durations, policy) in scenarios.items():
        strategies: dict[str, tuple[Strategy, int]] = {
            f"adaptive [{policy.min_seconds},{policy.max_seconds}]": (adaptive(policy), policy.min_seconds),
            "fixed 5 s": (fixed(5), 5),
            "fixed 15 s": (fixed(15), 15),
            "fixed 60 s": (fixed(60), 60),
        }
        for hints in ("eta", "progress", "none"):
            for label, (strategy, first) in strategies.items():
                if label.startswith("fixed") and hints != "eta":
                    continue  # fixed polling ignores hints: one row is enough
                results = [simulate(d, strategy, hints, random.Random(i), first) for i, d in enumerate(durations)]
                polls = [p for p, _ in results]
                delays = sorted(d for _, d in results)
                print(
                    f"{name:<24} {hints if label.startswith('adaptive') else 'any':<15} {label:<22} {statistics.mean(polls):>10.1f} "
                    f"{TRANSITIONS_PER_POLL * statistics.mean(polls):>16.1f} {statistics.mean(delays):>13.1f} "
                    f"{delays[int(0.95 * len(delays))]:>12.1f}"
                )
        print()


if __name__ == "__main__":
    main()
