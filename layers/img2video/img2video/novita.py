"""The Novita VIDU Q2 Turbo client: submit a task, read its result, map failures to named errors."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import lru_cache
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from img2video.errors import (
    InsufficientBalance,
    PipelineError,
    ProviderAuth,
    ProviderRejected,
    ProviderThrottled,
    ProviderUnavailable,
)
from img2video.observability import logger

SUBMIT_PATH = "/v3/async/vidu-q2-turbo-img2video"
RESULT_PATH = "/v3/async/task-result"
CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 30.0
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


def provider_message(body: str) -> str:
    """The provider's own words from an error body, whatever its shape, kept short."""
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
    text = " ".join(text.split())
    return text[:MAX_MESSAGE_CHARS] + ("..." if len(text) > MAX_MESSAGE_CHARS else "")


def classify_http_error(status: int, body: str, retry_after: str | None = None) -> PipelineError:
    """Map a non-2xx answer to the error the pipeline reports or retries."""
    message = provider_message(body) or f"HTTP {status}"
    if status == 429:
        return ProviderThrottled(f"Novita is throttling requests (HTTP 429): {message}", _lenient_float(retry_after))
    if status >= 500:
        return ProviderUnavailable(f"Novita is unavailable (HTTP {status}): {message}")
    if status in (401, 403):
        return ProviderAuth(f"Novita refused the API key (HTTP {status}): {message}")
    if any(word in message.lower() for word in ("balance", "insufficient", "credit", "quota exceeded")):
        return InsufficientBalance(f"Novita account balance is too low (HTTP {status}): {message}")
    return ProviderRejected(f"Novita rejected the request (HTTP {status}): {message}")


@lru_cache(maxsize=1)
def shared_session() -> requests.Session:
    """One session per container, so a warm Lambda reuses its connection to Novita between polls."""
    # Only idempotent GETs are retried here; a POST that may have created a paid task is never
    # re-sent blindly (throttled submits are re-queued by the caller, with a longer backoff).
    retry = Retry(
        total=2,
        connect=2,
        read=2,
        status=2,
        backoff_factor=0.5,
        backoff_jitter=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


class NovitaClient:
    def __init__(self, base_url: str, api_key: str, session: requests.Session | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._session = session or shared_session()

    def __repr__(self) -> str:  # never show the key, not even in a traceback's locals
        return f"NovitaClient({self._base_url!r})"

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self._base_url}{path}"
        headers = {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}
        try:
            response = self._session.request(method, url, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs)
        except requests.exceptions.RetryError as exc:
            raise ProviderUnavailable(f"Novita did not answer {method} {path} after retries: {type(exc).__name__}") from None
        except requests.exceptions.RequestException as exc:
            raise ProviderUnavailable(f"Novita could not be reached for {method} {path}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            error = classify_http_error(
                response.status_code, response.text.replace(self._api_key, "***"), response.headers.get("Retry-After")
            )
            logger.warning("Novita answered an error", extra={"status": response.status_code, "path": path, "error": error.message})
            raise error
        try:
            data = response.json()
        except ValueError:
            raise ProviderUnavailable(f"Novita answered {method} {path} with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderUnavailable(f"Novita answered {method} {path} with unexpected JSON")
        return data

    def submit(self, body: dict[str, Any]) -> str:
        data = self._request("POST", SUBMIT_PATH, json=body)
        task_id = data.get("task_id")
        if not task_id:
            raise ProviderUnavailable("Novita accepted the request but returned no task_id")
        return str(task_id)

    def task_result(self, task_id: str) -> TaskResult:
        data = self._request("GET", RESULT_PATH, params={"task_id": task_id})
        try:
            return TaskResult.model_validate(data)
        except ValueError:
            raise ProviderUnavailable(f"Novita's task result for {task_id} has an unexpected shape") from None


def load_api_key(secret_id: str) -> str:
    """The key from Secrets Manager, cached by Powertools; plain text or {"api_key": "..."}."""
    from aws_lambda_powertools.utilities import parameters

    value = str(parameters.get_secret(secret_id, max_age=300))
    try:
        data = json.loads(value)
    except ValueError:
        return value.strip()
    if isinstance(data, dict) and isinstance(data.get("api_key"), str):
        return str(data["api_key"]).strip()
    return value.strip()
