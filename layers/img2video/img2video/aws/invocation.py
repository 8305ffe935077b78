"""The invocation being served: its Lambda context, and the time it has left."""

from __future__ import annotations

from typing import Any

_lambda_context: list[Any] = []


def use_lambda_context(context: Any) -> None:
    """Let idempotency records in progress expire with the invocation, so a crashed attempt can be retried."""
    _lambda_context[:] = [context]


def remaining_seconds(default: float = 900.0) -> float:
    """Time left in this invocation (the default outside Lambda)."""
    if _lambda_context and hasattr(_lambda_context[0], "get_remaining_time_in_millis"):
        return float(_lambda_context[0].get_remaining_time_in_millis()) / 1000
    return default
