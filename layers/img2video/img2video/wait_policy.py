"""How long to wait before the next poll: few polls, yet a short delay once the task is done."""

from __future__ import annotations

import math
from dataclasses import dataclass

from img2video.settings import Settings

# Each poll costs about 9 history events (Wait, Task, Choice), up to ~33 with every Retry spent:
# 600 polls stay under Step Functions' 25,000-event history whatever the provider's eta says.
MAX_POLLS = 600


@dataclass(frozen=True)
class WaitPolicy:
    min_seconds: int
    max_seconds: int
    growth: float = 1.6
    # Aim a little early: an eta that runs 25 % long would otherwise hold the notice back by minutes
    # on long tasks (bench/polling.py: off-peak delay 25 s → 3 s mean for two more polls).
    eta_share: float = 0.8

    def next_wait(
        self,
        previous_wait: int | None,
        eta: float | None = None,
        progress_percent: float | None = None,
        elapsed_seconds: float | None = None,
    ) -> int:
        """Trust the provider's estimate when it gives one; otherwise back off geometrically.

        - `eta` (seconds left): wait most of it, so the next poll lands about when the task ends.
        - `progress_percent` with the time spent so far: extrapolate the time left linearly.
        - neither: grow the previous wait by `growth`, starting from the minimum.
        The answer is always within [min_seconds, max_seconds].
        """
        if eta is not None and eta > 0:
            wanted = eta * self.eta_share
        elif progress_percent is not None and 0 < progress_percent < 100 and elapsed_seconds and elapsed_seconds > 0:
            wanted = elapsed_seconds * (100 - progress_percent) / progress_percent
        elif previous_wait is None:
            wanted = self.min_seconds
        else:
            wanted = previous_wait * self.growth
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
