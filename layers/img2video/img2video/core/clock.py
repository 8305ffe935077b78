"""Time as the pipeline records it: epoch seconds inside, ISO-8601 UTC in notices and manifests."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> float:
    return time.time()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str | None, default: float | None = None) -> float:
    """Epoch seconds of an ISO-8601 time (S3 event times end in Z); `default` (or now) when absent."""
    if not value:
        return now() if default is None else default
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
