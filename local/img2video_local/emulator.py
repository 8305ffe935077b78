"""A loopback Novita emulator: the submit and task-result endpoints, real MP4s, and injectable faults."""

from __future__ import annotations

import base64
import heapq
import json
import math
import random
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from img2video_local.emulator_faults import Faults
from img2video_local.novita_rules import ENDPOINTS, image_problem, image_references, output_of, validate_body
from img2video_local.render import render_video
from img2video_local.s3_presign import S3Refusal, presigned_url_refusal

SUBMIT_PATH = "/v3/async/vidu-q2-turbo-img2video"  # the default model's endpoint
ASYNC_PREFIX = "/v3/async/"
RESULT_PATH = "/v3/async/task-result"


@lru_cache(maxsize=8)
def _rendered(image: bytes, resolution: int, duration: int, fps: int, end: bytes | None = None) -> bytes:
    """The same request renders the same video: rendered once, so a task's end is its generation time, not how busy
    this machine's CPU is (a benchmark of many identical jobs would otherwise measure the emulator's encoder)."""
    return render_video(image, resolution, duration, fps, end)


@dataclass
class Task:
    task_id: str
    body: dict[str, Any]
    created: float
    model: str = "vidu-q2-turbo-img2video"
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


class ImageRefused(ValueError):
    def __init__(self, refusal: S3Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


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
        task_type = task.model.upper().replace("-", "_").replace(".", "_")
        info: dict[str, Any] = {"task_id": task.task_id, "task_type": task_type, "reason": ""}
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
            images = [self._fetch_image(reference) for reference in image_references(ENDPOINTS[task.model], task.body)]
            problem = image_problem(task.model, images)
            if problem:  # the pipeline should never pay for this: tests count it
                self.count("bad_image")
                task.error = problem
                return
            short_side, seconds = output_of(task.model, task.body)
            end = images[1] if len(images) > 1 and ENDPOINTS[task.model].has_end_frame else None
            task.video = _rendered(images[0], short_side, seconds, self.config.fps, end)
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

    def create_task(self, body: dict[str, Any], *, answer_delayed: bool = False, model: str = "vidu-q2-turbo-img2video") -> Task:
        faults = self.config.faults
        fate = "fail" if self.chance(faults.fail) else "hang" if self.chance(faults.hang) else "succeed"
        url = webhook_url_of(body)
        webhook_faults = self._webhook_faults(url)
        task = Task(
            webhook_url=url,
            webhook_faults=webhook_faults,
            task_id=str(uuid.uuid4()),
            body=body,
            model=model,
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
                    "model": model,
                    "image": _image_identity(image_references(ENDPOINTS[model], body)[0]),
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
        path = urlsplit(self.path).path
        model = path.removeprefix(ASYNC_PREFIX)
        if not path.startswith(ASYNC_PREFIX) or model not in ENDPOINTS:
            self._error(404, "API_NOT_FOUND", f"no such endpoint {self.path}")
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
        problem = validate_body(model, body)
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
        task = emulator.create_task(body, answer_delayed=answer_delayed, model=model)
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
