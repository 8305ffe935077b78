"""Telling AWS's own passing faults (throttling, 5xx, lost connections) from real errors, and naming them for the ASL."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError
from botocore.retries.standard import ThrottledRetryableChecker, TransientRetryableChecker

from img2video.core.errors import AwsTransient

F = TypeVar("F", bound=Callable[..., Any])

# botocore's own lists, so we agree with its retry logic on what is worth another try.
_TRANSIENT_CODES = {*TransientRetryableChecker._TRANSIENT_ERROR_CODES, *ThrottledRetryableChecker._THROTTLED_ERROR_CODES}
_TRANSIENT_CODES |= {"InternalError", "InternalFailure", "ServiceUnavailable", "SlowDown", "Throttled", "KMSThrottlingException"}
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
# Why DynamoDB cancels a transaction that is worth trying again: another transaction on one of its items at the same
# moment (five Submits on one daily-limit item meet this), throttling, a passing fault. ConditionalCheckFailed is not.
TRANSIENT_CANCELLATIONS = {
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
    "InternalServerError",
}
# Powertools raises these when its DynamoDB record could not be read or written, or another attempt holds it.
_IDEMPOTENCY_TRANSIENT = ("IdempotencyPersistenceLayerError", "IdempotencyAlreadyInProgressError")


def cancellation_reasons(exc: ClientError) -> list[str]:
    """Each item's reason for a cancelled DynamoDB transaction, in the order of its items ("None" for an item that was fine)."""
    return [str(reason.get("Code", "None")) for reason in exc.response.get("CancellationReasons", [])]


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        if error.get("Code") == "TransactionCanceledException":
            return bool(set(cancellation_reasons(exc)) & TRANSIENT_CANCELLATIONS)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    return type(exc).__name__ in _IDEMPOTENCY_TRANSIENT


def backoff_seconds(attempt: int, cap: float, base: float, retry_after: float | None = None) -> float:
    """How long to wait before trying again: exponential backoff with full jitter, at least a second, and never
    shorter than the provider's Retry-After."""
    return max(1.0, retry_after or 0.0, random.uniform(0, min(cap, base * 2**attempt)))


def describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "an AWS call")
        return f"{operation} failed with {error.get('Code', 'an error')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def as_step_errors(handler: F) -> F:
    """Raise AWS's passing faults as AwsTransient, the name every state's Retry lists."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except AwsTransient:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise AwsTransient(describe(exc)) from exc
            raise

    return wrapper  # type: ignore[return-value]
