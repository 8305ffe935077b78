"""The Novita VIDU Q2 Turbo client: submit a task, read its result, map failures to named errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import cache
from typing import Any, cast

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator
from requests.adapters import HTTPAdapter

from img2video.clock import now
from img2video.errors import (
    InsufficientBalance,
    PipelineError,
    ProviderAuth,
    ProviderRejected,
    ProviderThrottled,
    ProviderUnavailable,
)
from img2video.masking import scrub, scrub_values
from img2video.observability import logger, mask_in_logs
from img2video.request_body import json_body

SUBMIT_PATH = "/v3/async/vidu-q2-turbo-img2video"
RESULT_PATH = "/v3/async/task-result"

# One HTTP attempt per call, each wait bounded: the state machine and the queues retry, with backoff,
# outside the function, so a slow or failing Novita never holds a Lambda until its timeout kills it.
CONNECT_TIMEOUT = 3.05
SUBMIT_READ_TIMEOUT = 30.0  # creating a task, after a body that may carry a 50 MB image, takes Novita a while
RESULT_READ_TIMEOUT = 10.0
MAX_MESSAGE_CHARS = 300


class TaskStatus(StrEnum):
    QUEUED = "TASK_STATUS_QUEUED"
    PROCESSING = "TASK_STATUS_PROCESSING"
    SUCCEED = "TASK_STATUS_SUCCEED"
    FAILED = "TASK_STATUS_FAILED"
    UNKNOWN = "UNKNOWN"


def _lenient_float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class TaskInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str = ""
    status: str = ""
    reason: str = ""
    eta: float | None = None
    progress_percent: float | None = None

    _lenient = field_validator("eta", "progress_percent", mode="before")(lambda v: _lenient_float(v))

    @property
    def task_status(self) -> TaskStatus:
        try:
            return TaskStatus(self.status)
        except ValueError:
            return TaskStatus.UNKNOWN


class VideoInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    video_url: str
    video_url_ttl: float | None = None
    video_type: str = "mp4"

    _lenient = field_validator("video_url_ttl", mode="before")(lambda v: _lenient_float(v))


class TaskResult(BaseModel):
    """The Task Result answer, parsed leniently: numbers may arrive as strings, unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    task: TaskInfo
    videos: list[VideoInfo] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def generation_seconds(self) -> float | None:
        """How long the task took, submit to completion, by Novita's own clock (`extra.debug_info`); None when it does
        not say. Unlike the moment a poll or a webhook saw it done, this does not depend on when anyone looked."""
        info = self.extra.get("debug_info")
        if not isinstance(info, dict):
            return None
        submitted, completed = _lenient_float(info.get("submit_time_ms")), _lenient_float(info.get("complete_time_ms"))
        if submitted is None or completed is None or not 0 < completed - submitted < 7 * 86400 * 1000:
            return None
        return (completed - submitted) / 1000


def read_timeout(method: str) -> float:
    """How long one call may wait for Novita's answer, by HTTP method: a submit, or a task-result read."""
    timeouts = {"POST": SUBMIT_READ_TIMEOUT, "GET": RESULT_READ_TIMEOUT}
    try:
        return timeouts[method.upper()]
    except KeyError:
        raise ValueError(f"the Novita client makes no {method} calls") from None


def worst_case_seconds(method: str, *, key_refresh: bool = False) -> float:
    """The longest one client call can take: one attempt, its connect and its read timing out, never retried.

    `key_refresh=True` counts the one second attempt a client with `read_key_afresh` makes after Novita refused
    the key (the Secrets Manager read between them is not included). The read timeout bounds each wait
    on the socket, which for Novita's few-hundred-byte answers is the whole answer; an inline image is
    written with CONNECT_TIMEOUT per send, its total depending on bandwidth (~67 MB at most).
    """
    attempts = 2 if key_refresh else 1
    return attempts * (CONNECT_TIMEOUT + read_timeout(method))


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


@cache
def shared_session() -> requests.Session:
    """One session per container, so a warm Lambda reuses its connection to Novita between calls."""
    # max_retries=0: urllib3 makes one attempt and never sleeps; the state machine and the queues retry.
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=0))
    session.mount("http://", HTTPAdapter(max_retries=0))
    return session


class NovitaClient:
    def __init__(
        self, base_url: str, api_key: str, session: requests.Session | None = None, read_key_afresh: Callable[[], str] | None = None
    ) -> None:
        """`read_key_afresh`, when given, reads the key again from where it is kept: once, should Novita refuse the key."""
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._session = session or shared_session()
        self._read_key_afresh = read_key_afresh
        self._old_keys: list[str] = []  # masked too, should Novita echo a key it was sent earlier (or the webhook's secret)
        mask_in_logs(api_key)

    def mask(self, secret: str) -> None:
        """Mask another secret the requests carry (the webhook URL's path) wherever Novita's answers echo it."""
        if secret and secret not in self._old_keys:
            self._old_keys.append(secret)

    def __repr__(self) -> str:  # never show the key, not even in a traceback's locals
        return f"NovitaClient({self._base_url!r})"

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        try:
            return self._attempt(method, path, params, body, timeout)
        except ProviderAuth:
            if not self._fresh_key():
                raise
        # a refused key created nothing, so even a POST is safe to send again
        logger.info("Novita refused the API key; trying once more with the key just read again", extra={"path": path})
        return self._attempt(method, path, params, body, timeout)

    def _fresh_key(self) -> bool:
        """Read the key again, bypassing any cache: true if it is now another key (just rotated or set)."""
        if self._read_key_afresh is None:
            return False
        fresh = self._read_key_afresh()
        if fresh == self._api_key:
            return False
        self._old_keys.append(self._api_key)
        self._api_key = fresh
        mask_in_logs(fresh)
        return True

    def _attempt(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: Mapping[str, Any] | None,
        timeout: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """One HTTP request, never retried: its answer as JSON, or the named error it maps to."""
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json_body(body)  # inline images are read and encoded while the request is written
        timeout = timeout or (CONNECT_TIMEOUT, read_timeout(method))
        try:
            response = self._session.request(
                method, f"{self._base_url}{path}", headers=headers, params=params, data=data, timeout=timeout, allow_redirects=False
            )
        except requests.exceptions.ConnectTimeout:
            raise ProviderUnavailable(f"Novita did not accept a connection for {method} {path} within {CONNECT_TIMEOUT} s") from None
        except requests.exceptions.ReadTimeout:
            raise ProviderUnavailable(f"Novita did not answer {method} {path} within {timeout[1]:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise ProviderUnavailable(f"Novita could not be reached for {method} {path}: {type(exc).__name__}") from None
        finally:
            if data is not None:
                data.close()
        if response.status_code >= 300:
            secrets = (self._api_key, *self._old_keys)
            error = classify_http_error(response.status_code, response.text, response.headers.get("Retry-After"), secrets)
            logger.warning("Novita answered an error", extra={"status": response.status_code, "path": path, "error": error.message})
            raise error
        try:
            answer = response.json()
        except ValueError:
            raise ProviderUnavailable(f"Novita answered {method} {path} with a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise ProviderUnavailable(f"Novita answered {method} {path} with unexpected JSON")
        # every text the answer holds, once decoded, is masked: a task's reason or a URL may echo the key
        return cast(dict[str, Any], scrub_values(answer, self._api_key, *self._old_keys))

    def submit(self, body: Mapping[str, Any]) -> str:
        """Create the task; `body["images"]` may hold InlineImage entries, which are streamed, never held whole."""
        data = self._request("POST", SUBMIT_PATH, body=body)
        task_id = data.get("task_id")
        if not task_id:
            raise ProviderUnavailable("Novita accepted the request but returned no task_id")
        return str(task_id)

    def task_result(self, task_id: str, timeout: tuple[float, float] | None = None) -> TaskResult:
        """The task's status (and video, once done); `timeout` (connect, read) shortens the wait for a caller on a deadline."""
        data = self._request("GET", RESULT_PATH, params={"task_id": task_id}, timeout=timeout)
        try:
            return TaskResult.model_validate(data)
        except ValueError:
            raise ProviderUnavailable(f"Novita's task result for {task_id} has an unexpected shape") from None
