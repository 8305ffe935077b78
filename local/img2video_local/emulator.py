"""A loopback Novita emulator: the submit and task-result endpoints, real MP4s, and injectable faults."""

from __future__ import annotations

import base64
import heapq
import json
import math
import random
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import requests

from img2video_local.render import render_video

SUBMIT_PATH = "/v3/async/vidu-q2-turbo-img2video"
RESULT_PATH = "/v3/async/task-result"
ALLOWED = {
    "resolution": ("540p", "720p", "1080p"),
    "movement_amplitude": ("auto", "small", "medium", "high"),
}
BOOLEANS = ("bgm", "audio", "watermark", "off_peak")
KNOWN_FIELDS = {"images", "prompt", "duration", "resolution", "movement_amplitude", "seed", "voice_id", "extra", *BOOLEANS}


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


@lru_cache(maxsize=8)
def _rendered(image: bytes, resolution: str, duration: int, fps: int) -> bytes:
    """The same request renders the same video: rendered once, so a task's end is its generation time, not how busy
    this machine's CPU is (a benchmark of many identical jobs would otherwise measure the emulator's encoder)."""
    return render_video(image, resolution, duration, fps)


@dataclass
class Task:
    task_id: str
    body: dict[str, Any]
    created: float
    fate: str = "succeed"  # succeed | fail | hang
    expire_first_url: bool = False
    truncate_first_download: bool = False
    video: bytes | None = None
    error: str = ""
    downloads: int = 0
    urls_issued: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    done_at: float = 0.0
    webhook_url: str = ""
    webhook_faults: frozenset[str] = frozenset()

    @property
    def instant(self) -> bool:
        """The webhook_early fault: the task finishes as soon as its video is rendered."""
        return "early" in self.webhook_faults


@dataclass
class EmulatorConfig:
    api_key: str = "local-novita-key"
    generation_seconds: float = 3.0
    queue_seconds: float = 0.5
    concurrency: int = 0  # 0: unlimited; otherwise unfinished tasks beyond this get 429
    balance: int | None = None  # tasks the account can still pay for (None: unlimited); then 400 BILLING_BALANCE_NOT_ENOUGH
    video_ttl_seconds: int = 3600
    fps: int = 24
    render_workers: int = 2
    faults: Faults = field(default_factory=Faults)
    # Multiplies every duration the emulator uses (queue, generation, slow answers, Retry-After, video TTL),
    # so a 45 s stall at 0.05 takes 2.25 s and every ratio between durations stays the same.
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {self.time_scale}")

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale


def seconds_text(seconds: float) -> str:
    """Seconds as a header or JSON string: whole seconds as Novita sends them; a scaled value keeps its fraction."""
    rounded = round(float(seconds), 3)
    return str(int(rounded)) if rounded.is_integer() else f"{rounded:.3f}".rstrip("0")


# -- S3's view of a presigned image URL ---------------------------------------------------------------
# moto serves any presigned URL, SigV2 included; S3 does not. A bucket created since 2020 refuses SigV2,
# Block Public Access (the default since 2023) refuses unsigned reads, and only a regional endpoint is
# safe: the global host redirects for a bucket outside us-east-1, so a stack in any other region breaks.
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4_PARAMETERS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")
MAX_PRESIGN_SECONDS = 604800  # SigV4 presigned URLs live at most a week
CLOCK_SKEW_SECONDS = 900
_REGIONAL_S3_HOST = re.compile(
    r"(?:^|\.)s3(?:-accesspoint|-object-lambda)?(?:\.dualstack)?[.-](?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$"
)


@dataclass(frozen=True)
class S3Refusal:
    """What S3 answers instead of the object: the HTTP status, its error code and message."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"S3 refused the image URL (HTTP {self.status} {self.code}): {self.message}"


class ImageRefused(ValueError):
    def __init__(self, refusal: S3Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def is_s3_host(host: str) -> bool:
    if not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return False
    return any(label == "s3" or label.startswith("s3-") for label in host.split("."))


def presigned_url_refusal(url: str, now: float) -> S3Refusal | None:
    """S3's refusal of an image URL, or None when S3 would serve it (or it is not an S3 URL at all)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not is_s3_host(host):
        return None
    query = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    if "X-Amz-Algorithm" not in query:
        if "Signature" in query or "AWSAccessKeyId" in query:
            return S3Refusal(
                400, "InvalidRequest", "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
            )
        return S3Refusal(403, "AccessDenied", "Access Denied")
    if query["X-Amz-Algorithm"] != SIGV4_ALGORITHM:
        return _query_error(f'X-Amz-Algorithm only supports "{SIGV4_ALGORITHM}"')
    if any(not query.get(name) for name in SIGV4_PARAMETERS):
        return _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
            "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    return _scope_refusal(host, query["X-Amz-Credential"]) or _time_refusal(query["X-Amz-Date"], query["X-Amz-Expires"], now)


def _scope_refusal(host: str, credential: str) -> S3Refusal | None:
    """S3's refusal of a signature's scope: its form, and its region against the endpoint's."""
    regional = _REGIONAL_S3_HOST.search(host)
    scope = credential.split("/")
    if len(scope) != 5 or scope[3] != "s3" or scope[4] != "aws4_request":
        return _query_error("Error parsing the X-Amz-Credential parameter; expecting <AKID>/YYYYMMDD/REGION/s3/aws4_request")
    if regional is None:
        return S3Refusal(
            301,
            "PermanentRedirect",
            "The bucket you are attempting to access must be addressed using the specified endpoint. "
            f"Please send all future requests to this endpoint. (a regional endpoint such as s3.{scope[2]}.amazonaws.com)",
        )
    if scope[2] != regional["region"]:
        expected = regional["region"]
        return _query_error(f"Error parsing the X-Amz-Credential parameter; the region '{scope[2]}' is wrong; expecting '{expected}'")
    return None


def _time_refusal(date: str, expires_text: str, now: float) -> S3Refusal | None:
    """S3's refusal of a signature's time: its form, too long a life, not valid yet, or expired."""
    try:
        signed = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if not expires_text.isdigit():
        return _query_error("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGN_SECONDS:
        return _query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is, "
            f"the given X-Amz-Expires must be less than {MAX_PRESIGN_SECONDS} seconds"
        )
    if signed > now + CLOCK_SKEW_SECONDS:
        return S3Refusal(403, "AccessDenied", "Request is not valid yet")
    if signed + expires < now:
        return S3Refusal(403, "AccessDenied", "Request has expired")
    return None


def _query_error(message: str) -> S3Refusal:
    return S3Refusal(400, "AuthorizationQueryParametersError", message)


class NovitaEmulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.tasks: dict[str, Task] = {}
        self.submissions: list[dict[str, Any]] = []  # every accepted POST: what was paid for
        self.requests_seen: dict[str, int] = {
            "submit": 0,
            "result": 0,
            "video": 0,
            "throttled": 0,
            "errors": 0,
            "slowed": 0,
            "image_refused": 0,
        }
        self.served_videos: dict[str, bytes] = {}
        self._random = random.Random(self.config.faults.seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.config.render_workers, thread_name_prefix="render")
        self.webhooks: dict[str, int] = {}  # deliveries by outcome: delivered, refused, lost, forged, ...
        self.webhook_log: list[dict[str, Any]] = []
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = 0
        self._webhook_wake = threading.Condition()
        self._senders = ThreadPoolExecutor(max_workers=16, thread_name_prefix="webhook")
        self._server: ThreadingHTTPServer | None = None
        self.base_url = ""

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> str:
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="novita-emulator", daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._run_schedule, name="novita-webhooks", daemon=True).start()
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()  # ends any answer still being held back by a slow fault
        with self._webhook_wake:
            self._webhook_wake.notify_all()
        self._senders.shutdown(wait=False, cancel_futures=True)
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def chance(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._random.random() < rate

    def count(self, name: str) -> None:
        with self._lock:
            self.requests_seen[name] = self.requests_seen.get(name, 0) + 1

    def hold_answer(self) -> None:
        """A slow answer: slow_seconds on the scaled timeline, cut short only by stop()."""
        self.count("slowed")
        self._stopping.wait(self.config.scaled(self.config.faults.slow_seconds))

    def retry_after(self) -> str:
        """A Retry-After value from the configured range, on the scaled timeline."""
        faults = self.config.faults
        low = faults.retry_after if faults.retry_after_min is None else faults.retry_after_min
        low, high = sorted((low, faults.retry_after))
        seconds = high
        if low < high:  # a fixed value draws nothing, so seeded fault sequences stay as they were
            with self._lock:
                seconds = self._random.uniform(low, high)
            if low >= 1:
                seconds = round(seconds)  # servers send whole seconds; only the time scale adds fractions
        return seconds_text(self.config.scaled(seconds))

    # -- task lifecycle -------------------------------------------------------------------------
    def status_of(self, task: Task, now: float) -> dict[str, Any]:
        queue, total = self._queue_and_total(task)
        generation = total - queue
        elapsed = now - task.created
        info: dict[str, Any] = {"task_id": task.task_id, "task_type": "VIDU_Q2_TURBO_IMG2VIDEO", "reason": ""}
        if task.error or (task.fate == "fail" and elapsed >= total):
            return {
                **info,
                "status": "TASK_STATUS_FAILED",
                "reason": task.error or "content moderation: the image was rejected",
                "eta": 0,
                "progress_percent": 0,
            }
        if elapsed < queue:
            return {**info, "status": "TASK_STATUS_QUEUED", "eta": self._eta(total - elapsed), "progress_percent": 0}
        if task.fate == "hang":
            return {**info, "status": "TASK_STATUS_PROCESSING", "eta": 0, "progress_percent": 42}
        if elapsed < total or not task.done.is_set():
            progress = min(99, int(100 * (elapsed - queue) / max(generation, 0.001)))
            return {
                **info,
                "status": "TASK_STATUS_PROCESSING",
                "eta": seconds_text(self._eta(total - elapsed)),  # the real API sends numbers as strings too
                "progress_percent": progress,
            }
        return {**info, "status": "TASK_STATUS_SUCCEED", "eta": 0, "progress_percent": 100}

    def _eta(self, remaining: float) -> float:
        """Seconds left, rounded up: whole seconds as Novita sends them, hundredths on a scaled timeline."""
        if self.config.time_scale == 1:
            return max(1, math.ceil(remaining))
        return max(0.01, math.ceil(remaining * 100) / 100)

    def _finished_times(self, task: Task, status: dict[str, Any]) -> dict[str, str]:
        """Novita's debug_info timestamps of a finished task: when it started executing and when it completed."""
        if status["status"] not in ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"):
            return {}
        queue, _ = self._queue_and_total(task)
        return {"execute_time_ms": str(int((task.created + queue) * 1000)), "complete_time_ms": str(int(self.end_time(task) * 1000))}

    def unfinished(self, now: float) -> int:
        return sum(1 for t in self.tasks.values() if self.status_of(t, now)["status"] in ("TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING"))

    def _prepare(self, task: Task) -> None:
        try:
            image = self._fetch_image(task.body["images"][0])
            task.video = _rendered(image, task.body.get("resolution", "720p"), int(task.body.get("duration", 5)), self.config.fps)
        except Exception as exc:  # the provider reports what went wrong as the task's reason
            task.error = f"could not process the input image: {exc}"
        finally:
            task.done_at = time.time()
            task.done.set()

    def _queue_and_total(self, task: Task) -> tuple[float, float]:
        """How long the task is queued, and how long until its generation time is up (on the scaled timeline)."""
        if task.instant:
            return 0.0, 0.0
        queue = self.config.scaled(self.config.queue_seconds)
        return queue, queue + self.config.scaled(self.config.generation_seconds)

    def end_time(self, task: Task) -> float:
        """When the task finished (or will): its generation time is up and its video is rendered."""
        return max(task.created + self._queue_and_total(task)[1], task.done_at)

    def task_result(self, task: Task, now: float, leaky: Callable[[str], str] = str) -> dict[str, Any]:
        """The Task Result answer for this task now (a webhook's payload has exactly this schema)."""
        status = self.status_of(task, now)
        if status.get("reason"):
            status["reason"] = leaky(status["reason"])
        videos = []
        if status["status"] == "TASK_STATUS_SUCCEED":
            with self._lock:
                task.urls_issued += 1
                issued = task.urls_issued
            ttl = self.config.scaled(self.config.video_ttl_seconds)
            expires = now - 1 if task.expire_first_url and issued == 1 else now + ttl
            videos.append(
                {
                    "video_url": f"{self.base_url}/videos/{task.task_id}.mp4?expires={expires:.3f}&n={issued}",
                    "video_url_ttl": seconds_text(ttl),
                    "video_type": "mp4",
                }
            )
        return {
            "extra": {
                "seed": str(task.body.get("seed", 158881667)),
                "debug_info": {"submit_time_ms": str(int(task.created * 1000)), **self._finished_times(task, status), "note": leaky("")},
            },
            "task": status,
            "images": [],
            "videos": videos,
            "audios": [],
        }

    # -- webhooks: Novita POSTs ASYNC_TASK_RESULT to extra.webhook.url when a task ends ---------------------------
    def _webhook_faults(self, url: str) -> frozenset[str]:
        faults = self.config.faults
        rates = {
            "lost": faults.webhook_lost,
            "late": faults.webhook_late,
            "dup": faults.webhook_dup,
            "forged": faults.webhook_forged,
            "early": faults.webhook_early,
        }
        return frozenset(name for name, rate in rates.items() if self.chance(rate)) if url else frozenset()

    def _schedule(self, due: float, action: Callable[[], None]) -> None:
        with self._webhook_wake:
            self._sequence += 1
            heapq.heappush(self._due, (due, self._sequence, action))
            self._webhook_wake.notify()

    def _run_schedule(self) -> None:
        while not self._stopping.is_set():
            with self._webhook_wake:
                while not self._stopping.is_set() and (not self._due or self._due[0][0] > time.time()):
                    self._webhook_wake.wait(timeout=(self._due[0][0] - time.time()) if self._due else 0.5)
                if self._stopping.is_set():
                    return
                _, _, action = heapq.heappop(self._due)
            self._senders.submit(action)

    def _webhooks_for(self, task: Task) -> None:
        """Plan the task's webhook deliveries as its faults say (called once the task exists)."""
        if not task.webhook_url:
            return
        if "forged" in task.webhook_faults:
            self._schedule(task.created, lambda: self._forge(task))
        if "lost" in task.webhook_faults:
            self.note_webhook("lost")
            return
        delay = self.config.scaled(self.config.faults.webhook_late_seconds) if "late" in task.webhook_faults else 0.0
        copies = 2 if "dup" in task.webhook_faults else 1
        for _ in range(copies):
            self._schedule(self.end_time(task) + delay, lambda: self._deliver(task, 1, delay))

    def _deliver(self, task: Task, attempt: int, delay: float) -> None:
        """One delivery; a task not finished yet (its video still rendering) is looked at again shortly."""
        now = time.time()
        answer = self.task_result(task, now)
        if answer["task"]["status"] not in ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"):
            if task.fate != "hang":
                self._schedule(max(now + 0.02, self.end_time(task) + delay), lambda: self._deliver(task, attempt, delay))
            return
        sent = time.monotonic()
        status = self.post_webhook(task.webhook_url, {"event_type": "ASYNC_TASK_RESULT", "payload": answer})
        self.note_webhook("delivered" if 200 <= status < 300 else "refused", task=task, status=status, seconds=time.monotonic() - sent)
        if not 200 <= status < 300 and attempt <= 5:  # Novita retries up to 5 times
            self._schedule(
                time.time() + self.config.scaled(self.config.faults.webhook_retry_seconds), lambda: self._deliver(task, attempt + 1, 0)
            )

    def _forge(self, task: Task) -> None:
        """Someone who learned the URL claims the task succeeded while it still runs; someone without it tries too."""
        videos = [{"video_url": "https://attacker.example/video.mp4", "video_url_ttl": "3600", "video_type": "mp4"}]
        fake: dict[str, Any] = {
            "event_type": "ASYNC_TASK_RESULT",
            "payload": {"task": {"task_id": task.task_id, "status": "TASK_STATUS_SUCCEED"}, "videos": videos},
        }
        parts = urlsplit(task.webhook_url)
        self.note_webhook("forged", status=self.post_webhook(task.webhook_url, fake))
        self.note_webhook("forged_without_secret", status=self.post_webhook(f"{parts.scheme}://{parts.netloc}/", fake))

    def post_webhook(self, url: str, body: dict[str, Any]) -> int:
        """POST as Novita does: JSON, answered within 5 s (on the scaled timeline, at least 1 s) or taken as failed."""
        try:
            answer = requests.post(url, json=body, timeout=max(1.0, self.config.scaled(5.0)), allow_redirects=False)
        except requests.RequestException:
            return 0
        return answer.status_code

    def note_webhook(self, kind: str, task: Task | None = None, status: int = 0, seconds: float = 0.0) -> None:
        """Count a webhook by outcome, and log it with the receiver's HTTP status and how long it took to answer."""
        with self._lock:
            self.webhooks[kind] = self.webhooks.get(kind, 0) + 1
            entry = {"kind": kind, "status": status, "task_id": task.task_id if task else "", "at": time.time(), "seconds": seconds}
            self.webhook_log.append(entry)

    def _fetch_image(self, reference: str) -> bytes:
        # moto would serve what S3 refuses, so S3's own checks come first.
        refusal = presigned_url_refusal(reference, time.time())
        if refusal:
            self.count("image_refused")
            raise ImageRefused(refusal)
        return _fetch_image(reference)

    def charge(self) -> bool:
        """Pay for one task from the balance, if there is one; False when it has run out."""
        with self._lock:
            if self.config.balance is None:
                return True
            if self.config.balance <= 0:
                return False
            self.config.balance -= 1
            return True

    def create_task(self, body: dict[str, Any], *, answer_delayed: bool = False) -> Task:
        faults = self.config.faults
        fate = "fail" if self.chance(faults.fail) else "hang" if self.chance(faults.hang) else "succeed"
        url = webhook_url_of(body)
        webhook_faults = self._webhook_faults(url)
        task = Task(
            webhook_url=url,
            webhook_faults=webhook_faults,
            task_id=str(uuid.uuid4()),
            body=body,
            created=time.time(),
            fate=fate,
            expire_first_url=self.chance(faults.expire),
            truncate_first_download=self.chance(faults.truncate),
        )
        with self._lock:
            self.tasks[task.task_id] = task
            self.submissions.append(
                {
                    "task_id": task.task_id,
                    "prompt": body.get("prompt"),
                    "image": _image_identity(body["images"][0]),
                    "fate": fate,
                    "at": task.created,
                    "answer_delayed": answer_delayed,  # paid for, but the client may never learn the task_id
                }
            )
        self._pool.submit(self._prepare, task)
        if not task.instant:
            self._webhooks_for(task)
        return task

    def deliver_early(self, task: Task) -> None:
        """The webhook_early fault: the task is done as soon as its video is rendered, and its webhook is delivered
        before the submit is answered, so the job cannot be waiting for it yet."""
        task.done.wait(30)
        if "lost" in task.webhook_faults:
            self.note_webhook("lost")
        else:
            self.note_webhook("early", task=task)
            self._deliver(task, 1, 0.0)
        if "forged" in task.webhook_faults:
            self._forge(task)


def webhook_url_of(body: dict[str, Any]) -> str:
    """extra.webhook.url of a submit body, or "" (validate_body has checked its shape)."""
    extra = body.get("extra")
    webhook = extra.get("webhook") if isinstance(extra, dict) else None
    url = webhook.get("url") if isinstance(webhook, dict) else None
    return url if isinstance(url, str) else ""


def _image_identity(reference: str) -> str:
    """The image a submit referred to, without the presigned signature (which differs per presign)."""
    if reference.startswith("data:"):
        return "data:" + str(hash(reference))
    parts = urlsplit(reference)
    return f"{parts.netloc}{parts.path}"


def _fetch_image(reference: str) -> bytes:
    if reference.startswith("data:"):
        header, _, data = reference.partition(",")
        if ";base64" not in header:
            raise ValueError("data URI is not base64")
        return base64.b64decode(data)
    response = requests.get(reference, timeout=10)
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code} fetching the image")
    return response.content


def validate_body(body: Any) -> str | None:
    """The provider's field validation; returns the first problem's message, in the order Novita checks, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for check in (_unknown_fields, _images, _prompt, _duration, _choices, _extra):
        problem = check(body)
        if problem:
            return problem
    return None


def _unknown_fields(body: dict[str, Any]) -> str | None:
    unknown = set(body) - KNOWN_FIELDS
    return f"unknown field(s): {', '.join(sorted(unknown))}" if unknown else None


def _images(body: dict[str, Any]) -> str | None:
    images = body.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
        return "images is required: an array of at least 1 image URL"
    if not all(image.startswith(("http://", "https://", "data:image/")) for image in images):
        return "images must be URLs or data:image/...;base64 URIs"
    return None


def _prompt(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    return "prompt must be at most 2000 characters" if len(prompt) > 2000 else None


def _duration(body: dict[str, Any]) -> str | None:
    duration = body.get("duration", 5)
    return "duration must be an integer between 1 and 10" if type(duration) is not int or not 1 <= duration <= 10 else None


def _choices(body: dict[str, Any]) -> str | None:
    """The fields with a fixed set of values, the booleans and the seed."""
    for name, allowed in ALLOWED.items():
        if name in body and body[name] not in allowed:
            return f"{name} must be one of {', '.join(allowed)}"
    for name in BOOLEANS:
        if name in body and not isinstance(body[name], bool):
            return f"{name} must be a boolean"
    return "seed must be an integer" if "seed" in body and type(body["seed"]) is not int else None


def _extra(body: dict[str, Any]) -> str | None:
    if "extra" not in body:
        return None
    extra = body["extra"]
    if not isinstance(extra, dict) or set(extra) - {"webhook"}:
        return "extra must be an object with at most a webhook"
    webhook = extra.get("webhook", {})
    url = webhook.get("url") if isinstance(webhook, dict) else None
    parts = urlsplit(url) if isinstance(url, str) else None
    loopback = parts is not None and parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    if parts is None or not parts.hostname or not (parts.scheme == "https" or loopback):
        return "extra.webhook.url must be an https URL"
    return None


class _Handler(BaseHTTPRequestHandler):
    emulator: NovitaEmulator

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on a slow answer
            self.close_connection = True

    def _error(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"code": status, "reason": reason, "message": self._leaky(message), "metadata": {}}, headers)

    def _leaky(self, text: str) -> str:
        """`text`, and with the `leak` fault the caller's key echoed in one of the spellings a provider might use."""
        if not self.emulator.chance(self.emulator.config.faults.leak):
            return text
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        spellings = [
            key,
            "".join(f"\\u{ord(char):04x}" for char in key),  # escaped twice: still escaped once decoded
            "".join(f"%{byte:02X}" for byte in key.encode()),
            "".join(f"%25{byte:02x}" for byte in key.encode()),
            key[:3] + "".join(f"\\u{ord(char):04X}" for char in key[3:6]) + key[6:],
            "".join(f"&#{ord(char)};" for char in key),  # an HTML error page's character references
            "".join(f"%5Cu{ord(char):04x}" for char in key),  # JSON escapes, URL-encoded
        ]
        with self.emulator._lock:
            spelling = self.emulator._random.choice(spellings)
        return f"{text} (request authorized as {spelling})"

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.emulator.config.api_key}":
            self._error(401, "INVALID_API_KEY", "invalid or missing API key")
            return False
        return True

    def _client_gone(self) -> bool:
        """Whether the client closed its end while we stalled (a timed-out client does)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _api_faults(self) -> bool:
        """Slow answers, 5xx and 429 before anything is created: a faulted request costs nothing."""
        emulator, faults = self.emulator, self.emulator.config.faults
        if emulator.chance(faults.slow):
            emulator.hold_answer()
            if self._client_gone():  # stalled in front of the service: a request nobody waits for goes no further
                self.close_connection = True
                return True
        if emulator.chance(faults.rate_5xx):
            emulator.count("errors")
            self._error(503, "SERVICE_UNAVAILABLE", "the service is temporarily unavailable")
            return True
        if emulator.chance(faults.rate_429):
            emulator.count("throttled")
            self._error(429, "RATE_LIMIT_EXCEEDED", "too many requests", {"Retry-After": emulator.retry_after()})
            return True
        return False

    def do_POST(self) -> None:
        emulator = self.emulator
        if urlsplit(self.path).path != SUBMIT_PATH:
            self._error(404, "NOT_FOUND", f"no such endpoint {self.path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        emulator.count("submit")
        if not self._authorized() or self._api_faults():
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._error(400, "INVALID_REQUEST_BODY", "request body is not valid JSON")
            return
        problem = validate_body(body)
        if problem:
            self._error(400, "INVALID_REQUEST_BODY", problem)
            return
        with emulator._lock:
            limit = emulator.config.concurrency
            busy = limit and emulator.unfinished(time.time()) >= limit
        if busy:
            emulator.count("throttled")
            self._error(429, "TOO_MANY_CONCURRENT_TASKS", f"at most {limit} tasks may run at once", {"Retry-After": emulator.retry_after()})
            return
        if not emulator.charge():
            self._error(400, "BILLING_BALANCE_NOT_ENOUGH", "your account balance is not enough for this task; top up to continue")
            return
        answer_delayed = emulator.chance(emulator.config.faults.slow_after)
        task = emulator.create_task(body, answer_delayed=answer_delayed)
        if task.instant:
            emulator.deliver_early(task)
        if answer_delayed:  # the task is created and billed; a client that times out now loses its task_id
            emulator.hold_answer()
        self._send(200, {"task_id": task.task_id})

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/videos/"):
            self._serve_video(parts.path, parse_qs(parts.query))
            return
        if parts.path != RESULT_PATH:
            self._error(404, "NOT_FOUND", f"no such endpoint {parts.path}")
            return
        emulator = self.emulator
        emulator.count("result")
        if not self._authorized() or self._api_faults():
            return
        task_id = (parse_qs(parts.query).get("task_id") or [""])[0]
        task = emulator.tasks.get(task_id)
        if task is None:
            self._error(404, "TASK_NOT_FOUND", f"task {task_id} not found")
            return
        self._send(200, emulator.task_result(task, time.time(), self._leaky))

    def _serve_video(self, path: str, query: dict[str, list[str]]) -> None:
        emulator = self.emulator
        task = emulator.tasks.get(path.rsplit("/", 1)[-1].removesuffix(".mp4"))
        if task is None or task.video is None:
            self._error(404, "NOT_FOUND", "no such video")
            return
        if float((query.get("expires") or ["0"])[0]) < time.time():
            self._error(403, "URL_EXPIRED", "the video URL has expired")
            return
        emulator.count("video")
        task.downloads += 1
        data = task.video
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if task.truncate_first_download and task.downloads == 1:
            self.wfile.write(data[: len(data) // 2])  # the connection drops halfway
            self.close_connection = True
            return
        # recorded before the bytes go out: a client that has read them all may look at once
        emulator.served_videos[task.task_id] = data
        self.wfile.write(data)
