"""How long to wait before the next poll: fewer polls than polling every PollMinSeconds, and no more delay.

The yardstick is the fixed interval `step` (PollMinSeconds): each rule below is never worse than waiting `step`,
and usually much better (bench/polling.py prints the table, per provider-hint regime and per interval):

- With a hint (`eta`, or `progress_percent` and the time spent), the time left lies within a band around the
  estimate (Novita's estimates are trusted to ±50 %). When even the band's upper end comes within `step`, wait
  exactly that long: the task is done by then, sooner than a fixed interval would see it. When even its lower end
  is beyond `step`, wait that long: the task cannot be done before, and the polls in between are skipped.
  Otherwise wait `step`, as a fixed interval would.
- Without hints, earlier jobs of the same model, resolution, duration and off-peak flag say when this one can be
  expected (their generation times, kept in the jobs table): `plan_from_history` picks the first poll and the
  spacing that need the fewest polls on that history while keeping its mean delay under the fixed interval's.
- With neither, back off geometrically from `step`.

With the webhook fast path (docs/design.md, section 4), each of these waits is a callback that Novita's webhook ends as soon
as the task is done. When the webhooks of a kind of job have been arriving (they came for most of its last jobs),
the first poll is put off until the job is surely done and its webhook surely delivered (the slowest of its kind by
Novita's own clock, with a margin, and Novita's 5 s to deliver): its webhook ends the wait first, so the job is usually
never polled. When the webhook does not come by then, it was lost, and the polls go on by the rules above. When
webhooks are not arriving (the model sends none, or they are refused), nothing changes: a webhook can only end a wait
sooner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from img2video.core.settings import Settings

# Each poll costs about 15 history events (the wait, a callback for the webhook or a Wait state, the Task, the Choice),
# up to ~71 with every Retry spent (Lambda's transient errors and its throttling): 300 polls stay under Step Functions'
# 25,000-event history whatever the provider's eta says (tests/unit/core/test_history_bound.py). A 48-hour off-peak wait
# still polls every ~10 minutes on average, within PollMaxSecondsOffPeak.
MAX_POLLS = 300
# How far a provider's estimate may be off: the time left is taken to lie within [estimate / 1.5, estimate / 0.5].
ESTIMATE_ERROR = 0.5
# Fewer earlier jobs than this say too little about the next one: back off instead.
MIN_HISTORY = 20
# A plan from history must keep its mean delay this far under the fixed interval's on that history: the margin
# absorbs what a sample of a hundred jobs does not show (bench/polling.py measures the result on new jobs).
PLAN_DELAY_MARGIN = 0.95
# Webhooks are trusted for a kind of job once at least this many of its last jobs were seen done, and the webhooks of
# at least WEBHOOK_TRUST_SHARE of those came (the rest were lost or refused; one that came late still counts).
WEBHOOK_TRUST_MIN = 5
WEBHOOK_TRUST_SHARE = 0.8
# A job whose webhook is expected is first polled this much later than the slowest of its kind (its 95th percentile
# once there are MIN_HISTORY jobs), and WEBHOOK_DELIVERY_SECONDS after that: the poll is the net for a lost webhook, not
# the way the job is seen done. Novita waits 5 s for a webhook's answer before it sends it again: a webhook that has not
# come 5 s after the task surely ended was lost (or is being retried, and a poll does no harm then).
SURE_DONE_MARGIN = 1.25
WEBHOOK_DELIVERY_SECONDS = 5


@dataclass(frozen=True)
class Plan:
    """When to poll a job of a known kind: the first look after `first` seconds, then every `spacing` seconds."""

    first: int
    spacing: float  # seconds on average: the Wait states take whole seconds, so waits alternate around it (wait_after)

    def wait_after(self, polls_since_first: int) -> int:
        """The whole-second wait after the n-th poll (from 1) that keeps the polls `spacing` apart on average."""
        return max(1, round(self.spacing * polls_since_first) - round(self.spacing * (polls_since_first - 1)))


def plan_from_history(samples: Sequence[float], step: int, longest: int) -> Plan | None:
    """The first poll and the spacing (whole seconds, at most `longest`, as the Wait states take them) that need the
    fewest polls on these generation times, with a mean delay under a fixed `step`'s by PLAN_DELAY_MARGIN;
    None when the history is too short to say; the fixed interval itself when no plan beats it on this history.
    The first wait may be longer than `longest`: no job of this kind has ever been done sooner."""
    ordered = sorted(float(sample) for sample in samples if sample > 0)
    count = len(ordered)
    if count < MIN_HISTORY:
        return None

    # Jobs spread over many intervals: where a poll falls within its interval is chance, so each job is counted at the
    # interval's average (half a spacing of delay), not at the phase this sample happens to have. Jobs as alike as a
    # few intervals: the phase is what the plan can use, so each is counted exactly.
    spread_out = ordered[count * 9 // 10] - ordered[count // 10] >= 10 * step

    def cost(first: int, spacing: float, jobs: Sequence[float] = ordered) -> tuple[float, float]:
        polls = delay = 0.0
        for seconds in jobs:
            if seconds <= first:
                polls, delay = polls + 1, delay + first - seconds
            elif spread_out:
                polls, delay = polls + 1.5 + (seconds - first) / spacing, delay + spacing / 2
            else:
                later = math.ceil((seconds - first) / spacing)
                polls, delay = polls + 1 + later, delay + first + later * spacing - seconds
        return polls / len(jobs), delay / len(jobs)

    def beats_fixed(first: int, spacing: float, jobs: Sequence[float]) -> bool:
        polls, delay = cost(first, spacing, jobs)
        fixed_polls, fixed_delay = cost(step, step, jobs)
        return polls < fixed_polls and delay <= fixed_delay * PLAN_DELAY_MARGIN

    # with no plan better than the fixed interval on this history, poll at the fixed interval: never worse
    best: tuple[float, Plan] = (math.inf, Plan(step, float(step)))
    # Never first poll later than the fastest job seen less the spread of the next few: the true fastest is faster
    # than a sample's. Later first polls come from the middle of the distribution, where a sample is reliable.
    start = max(step, math.floor(ordered[0] - (ordered[min(count - 1, 4)] - ordered[0])))
    deciles = [math.floor(ordered[(count - 1) * tenth // 10]) for tenth in range(1, 10)]
    halves = (ordered[0::2], ordered[1::2])
    for first in sorted({start, *(decile for decile in deciles if decile > start)}):
        for twentieths in range(10, 21):
            spacing = min(step, longest) * twentieths / 20
            # a plan must beat the fixed interval on each half of the history alone: one that wins only on the whole
            # has found a lucky phase of this sample, not a property of the jobs (it would not hold for the next ones)
            if all(beats_fixed(first, spacing, half) for half in halves):
                polls, _ = cost(first, spacing)
                if polls < best[0]:
                    best = (polls, Plan(first, spacing))
    return best[1]


def webhook_first_wait(samples: Sequence[float], arrivals: Sequence[bool]) -> int | None:
    """When a job whose webhook is expected should first be polled: once the slowest of its kind would be done and its
    webhook delivered; None when this kind's webhooks have not been arriving (or there is too little history to say),
    so polls go on as usual."""
    ordered = sorted(float(sample) for sample in samples if sample > 0)
    if len(arrivals) < WEBHOOK_TRUST_MIN or sum(arrivals) < WEBHOOK_TRUST_SHARE * len(arrivals) or len(ordered) < WEBHOOK_TRUST_MIN:
        return None
    slowest = ordered[math.ceil(0.95 * len(ordered)) - 1] if len(ordered) >= MIN_HISTORY else ordered[-1]
    return math.ceil(slowest * SURE_DONE_MARGIN + WEBHOOK_DELIVERY_SECONDS)


@dataclass(frozen=True)
class WaitPolicy:
    min_seconds: int  # the fixed interval every rule is measured against (PollMinSeconds)
    max_seconds: int
    growth: float = 1.6

    def first_wait(self, plan: Plan | None = None, webhook_expected_by: int | None = None) -> int:
        """The wait before the first poll: from history when there is one, else the fixed interval; when the job's
        webhook is expected (webhook_first_wait), not before the job is surely done."""
        usual = plan.first if plan else self._clamp(self.min_seconds)
        return max(usual, webhook_expected_by or 0)

    def plan(self, samples: Sequence[float]) -> Plan | None:
        return plan_from_history(samples, self.min_seconds, self.max_seconds)

    def next_wait(
        self,
        previous_wait: int | None,
        eta: float | None = None,
        progress_percent: float | None = None,
        elapsed_seconds: float | None = None,
        plan: Plan | None = None,
        polls: int = 1,
    ) -> int:
        """The wait before the next poll, within [min_seconds, max_seconds] except to end sooner than min_seconds."""
        step = float(self.min_seconds)
        estimate = None
        if eta is not None and eta > 0:
            estimate = float(eta)
        elif progress_percent is not None and 0 < progress_percent < 100 and elapsed_seconds and elapsed_seconds > 0:
            estimate = elapsed_seconds * (100 - progress_percent) / progress_percent
        if estimate is not None:
            lower, upper = estimate / (1 + ESTIMATE_ERROR), estimate / (1 - ESTIMATE_ERROR)
            if upper <= step:
                return max(1, math.ceil(upper))  # done by then for sure: sooner than the fixed interval
            return self._clamp(lower if lower >= step else step)
        if plan is not None:  # from history: its spacing may be shorter than the fixed interval, never longer
            return min(self.max_seconds, plan.wait_after(polls))
        if previous_wait is None:
            return self._clamp(step)
        return self._clamp(previous_wait * self.growth)

    def _clamp(self, wanted: float) -> int:
        # clamp before rounding: a tiny progress figure can extrapolate to infinity
        return round(min(float(self.max_seconds), max(float(self.min_seconds), wanted)))

    def bounded(self, wait: int, remaining_seconds: float, polls: int) -> int:
        """Spread what is left of the polls over what is left of the time, and never sleep far past the deadline."""
        polls_left = max(1, MAX_POLLS - polls)
        floor = math.ceil(max(0.0, remaining_seconds) / polls_left)
        return max(1, min(max(wait, floor), int(max(0.0, remaining_seconds)) + 1))


def policy_for(settings: Settings, off_peak: bool) -> WaitPolicy:
    """Off-peak tasks may take up to 48 hours: poll them with a longer cap."""
    return WaitPolicy(settings.poll_min_seconds, settings.poll_max_seconds_off_peak if off_peak else settings.poll_max_seconds)
