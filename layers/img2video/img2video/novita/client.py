"""The Novita client: submit a task and read its result, one bounded HTTP attempt per call, every answer masked."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, cast

import requests
from requests.adapters import HTTPAdapter

from img2video.core.errors import ProviderAuth, ProviderUnavailable
from img2video.core.masking import scrub_values
from img2video.novita.errors import classify_http_error
from img2video.novita.models import TaskResult
from img2video.novita.request_body import json_body
from img2video.observability import logger, mask_in_logs

SUBMIT_PATH = "/v3/async/vidu-q2-turbo-img2video"
RESULT_PATH = "/v3/async/task-result"

# One HTTP attempt per call, each wait bounded: the state machine and the queues retry, with backoff,
# outside the function, so a slow or failing Novita never holds a Lambda until its timeout kills it.
CONNECT_TIMEOUT = 3.05
SUBMIT_READ_TIMEOUT = 30.0  # creating a task, after a body that may carry a 50 MB image, takes Novita a while
RESULT_READ_TIMEOUT = 10.0


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

    def submit(self, body: Mapping[str, Any], path: str = SUBMIT_PATH) -> str:
        """Create the task at the model's endpoint (`path`); the body's images may be InlineImage entries, which are
        streamed, never held whole."""
        data = self._request("POST", path, body=body)
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
