"""The emulator's faults, as `--faults` and EmulatorConfig name them: what each makes Novita do, and their parsing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar


class FaultSpecError(ValueError):
    """A --faults spec that cannot be read."""


@dataclass
class Faults:
    """Fault rates (0..1) and durations (seconds, before the time scale). Spec string: "429=0.2,5xx=0.1,
    retry_after=30,slow=0.2,slow_after=0.1,slow_seconds=45,fail=0.1,hang=0.05,expire=0.1,truncate=0.1,dup=0.2,leak=0.3,seed=7".
    `retry_after=5-30` draws each Retry-After from 5 to 30 s. `slow` delays an answer before anything is created;
    `slow_after` creates (and bills) the task, then delays the answer. `dup` duplicates S3 event deliveries
    (applied by the runtime)."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    slow: float = 0.0
    slow_after: float = 0.0
    slow_seconds: float = 1.0
    retry_after: float = 1.0
    retry_after_min: float | None = None  # None: every Retry-After is exactly retry_after
    fail: float = 0.0
    hang: float = 0.0
    expire: float = 0.0
    truncate: float = 0.0
    dup: float = 0.0
    leak: float = 0.0  # an answer echoes the caller's API key (plain, JSON-escaped or URL-encoded), as a careless provider might
    # Webhooks (a task submitted with extra.webhook.url): every delivery lost; the first delivery late by
    # webhook_late_seconds; delivered twice at once; a forged call (a false SUCCEED while the task runs, once with the URL's
    # path and once without it); delivered before the submit is even answered (the task finishes at once).
    webhook_lost: float = 0.0
    webhook_late: float = 0.0
    webhook_dup: float = 0.0
    webhook_forged: float = 0.0
    webhook_early: float = 0.0
    webhook_late_seconds: float = 30.0
    webhook_retry_seconds: float = 10.0  # between Novita's retries of a delivery that was not answered 2xx (not documented)
    seed: int | None = None

    _NAMES: ClassVar[dict[str, str]] = {"429": "rate_429", "5xx": "rate_5xx"}
    _DURATIONS: ClassVar[tuple[str, ...]] = (
        "slow_seconds",
        "retry_after",
        "retry_after_min",
        "webhook_late_seconds",
        "webhook_retry_seconds",
    )

    @classmethod
    def parse(cls, spec: str | None) -> Faults:
        faults = cls()
        for item in filter(None, (part.strip() for part in (spec or "").split(","))):
            name, _, value = item.partition("=")
            attribute = cls._NAMES.get(name, name)
            if attribute.startswith("_") or attribute not in cls.__dataclass_fields__:
                raise FaultSpecError(f"unknown fault {name!r}; known: {', '.join(cls._spec_names())}")
            low, dash, high = value.partition("-")
            if attribute == "retry_after" and dash and low:
                faults.retry_after_min, faults.retry_after = _spec_number(name, low), _spec_number(name, high)
                if faults.retry_after_min > faults.retry_after:
                    raise FaultSpecError(f"fault {name!r} needs a range from low to high, got {value!r}")
                continue
            number = _spec_number(name, value)
            if attribute not in (*cls._DURATIONS, "seed") and not 0 <= number <= 1:
                raise FaultSpecError(f"fault {name!r} is a rate from 0 to 1, got {value}")
            setattr(faults, attribute, int(number) if attribute == "seed" else number)
        return faults

    @classmethod
    def _spec_names(cls) -> list[str]:
        aliases = {attribute: name for name, attribute in cls._NAMES.items()}
        return [aliases.get(attribute, attribute) for attribute in cls.__dataclass_fields__ if not attribute.startswith("_")]


def _spec_number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FaultSpecError(f"fault {name!r} needs a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise FaultSpecError(f"fault {name!r} needs a finite number of at least 0, got {value!r}")
    return number
