"""Novita's error answers mapped to the pipeline's named errors: by the `reason` of its error table, then by status."""

from __future__ import annotations

import json
import math
from datetime import UTC
from email.utils import parsedate_to_datetime

from img2video.core.clock import now
from img2video.core.errors import InsufficientBalance, PipelineError, ProviderAuth, ProviderRejected, ProviderThrottled, ProviderUnavailable
from img2video.core.masking import scrub

MAX_MESSAGE_CHARS = 300


def parse_retry_after(value: str | None, at: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for, or None if absent or unreadable.

    Both RFC 9110 forms: delta-seconds (fractional too, as the local emulator's scaled clock sends them)
    and an HTTP-date, counted from `at` (epoch seconds, default now); a date already past means 0.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        # a date without a zone (or with -0000) is still GMT, as HTTP-dates always are
        epoch = when.timestamp() if when.tzinfo else when.replace(tzinfo=UTC).timestamp()
        return max(0.0, epoch - (now() if at is None else at))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def provider_reason(body: str) -> str:
    """The `reason` of a Novita error body (`{"code", "reason", "message", "metadata"}`), or "" if it has none."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason.strip().upper() if isinstance(reason, str) else ""


def provider_message(body: str, secrets: tuple[str, ...] = ()) -> str:
    """The provider's own words from an error body, whatever its shape, masked, then kept short (never cut inside a key)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("message", "reason", "code") if data.get(k) not in (None, "")]
        if isinstance(data.get("metadata"), dict) and data["metadata"]:
            parts.append(json.dumps(data["metadata"], ensure_ascii=False))
        text = "; ".join(parts) if parts else body
    else:
        text = body
    text = scrub(" ".join(text.split()), *secrets)
    return text[:MAX_MESSAGE_CHARS] + ("..." if len(text) > MAX_MESSAGE_CHARS else "")


# Novita's error-code table (its API reference, "Errors"): the reason decides, whatever the status;
# BILLING_BALANCE_NOT_ENOUGH, for one, arrives as a plain 400.
_REASONS: dict[type[PipelineError], tuple[str, ...]] = {
    InsufficientBalance: ("BILLING_BALANCE_NOT_ENOUGH",),
    ProviderAuth: ("MISSING_API_KEY", "INVALID_API_KEY", "API_NOT_ALLOWED", "NEED_REAL_NAME_VERIFY", "BILLING_AUTH_FAILED"),
    ProviderThrottled: ("RATE_LIMIT_EXCEEDED",),
    ProviderUnavailable: ("BILLING_FAILED", "CREATE_TASK_FAILED", "GET_RESULT_FAILED", "TASK_FAILED"),
    ProviderRejected: (
        "INVALID_REQUEST_BODY",
        "IMAGE_FILE_EXCEEDS_MAX_SIZE",
        "INVALID_IMAGE_FORMAT",
        "IMAGE_EXCEEDS_MAX_RESOLUTION",
        "INVALID_IMAGE_SIZE",
        "ILLEGAL_PROMPT",
        "ILLEGAL_IMAGE_CONTENT",
        "API_NOT_FOUND",
        "TASK_NOT_FOUND",
    ),
}


REASON_ERRORS: dict[str, type[PipelineError]] = {reason: kind for kind, reasons in _REASONS.items() for reason in reasons}


_WHAT_HAPPENED: dict[type[PipelineError], str] = {
    InsufficientBalance: "Novita account balance is too low",
    ProviderAuth: "Novita refused the API key or its account",
    ProviderThrottled: "Novita is throttling requests",
    ProviderUnavailable: "Novita is unavailable",
    ProviderRejected: "Novita rejected the request",
}


def _error_by_status(status: int, message: str) -> type[PipelineError]:
    if status == 429:
        return ProviderThrottled
    if status >= 500:
        return ProviderUnavailable
    if status in (401, 403):
        return ProviderAuth
    # an error body without a known reason: its words are all there is to tell a balance problem by
    if any(word in message.lower() for word in ("balance", "insufficient", "credit", "quota exceeded")):
        return InsufficientBalance
    return ProviderRejected


def classify_http_error(status: int, body: str, retry_after: str | None = None, secrets: tuple[str, ...] = ()) -> PipelineError:
    """Map a non-2xx answer to the error the pipeline reports or retries: by Novita's reason first, then by status.

    `secrets` are masked in the message, however the provider echoed them.
    """
    body = scrub(body, *secrets)
    # scrubbed again once decoded: a form the pattern missed in the raw JSON is plain text by now
    message = provider_message(body, secrets) or f"HTTP {status}"
    kind = REASON_ERRORS.get(provider_reason(body)) or _error_by_status(status, message)
    text = f"{_WHAT_HAPPENED[kind]} (HTTP {status}): {message}"
    if kind is ProviderThrottled:
        return ProviderThrottled(text, parse_retry_after(retry_after))
    error = kind(text)
    error.retry_after = parse_retry_after(retry_after)  # a 503 may say when to come back, too
    return error
