"""A loopback Novita emulator: the submit and task-result endpoints, real MP4s, and injectable faults."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
    """Fault rates (0..1) and sizes. Spec string: "429=0.2,5xx=0.1,slow=0.2,slow_seconds=1,fail=0.1,hang=0.05,
    expire=0.1,truncate=0.1,dup=0.2,seed=7". `dup` duplicates S3 event deliveries (applied by the runtime)."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 1.0
    fail: float = 0.0
    hang: float = 0.0
    expire: float = 0.0
    truncate: float = 0.0
    dup: float = 0.0
    seed: int | None = None

    _NAMES: ClassVar[dict[str, str]] = {"429": "rate_429", "5xx": "rate_5xx"}

    @classmethod
    def parse(cls, spec: str | None) -> Faults:
        faults = cls()
        for item in filter(None, (part.strip() for part in (spec or "").split(","))):
            name, _, value = item.partition("=")
            attribute = cls._NAMES.get(name, name)
            if attribute.startswith("_") or attribute not in cls.__dataclass_fields__:
                raise FaultSpecError(
                    f"unknown fault {name!r}; known: 429, 5xx, slow, slow_seconds, fail, hang, expire, truncate, dup, seed"
                )
            try:
                number = float(value)
            except ValueError:
                raise FaultSpecError(f"fault {name!r} needs a number, got {value!r}") from None
            if attribute not in ("slow_seconds", "seed") and not 0 <= number <= 1:
                raise FaultSpecError(f"fault {name!r} is a rate from 0 to 1, got {value}")
            setattr(faults, attribute, int(number) if attribute == "seed" else number)
        return faults


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


@dataclass
class EmulatorConfig:
    api_key: str = "local-novita-key"
    generation_seconds: float = 3.0
    queue_seconds: float = 0.5
    concurrency: int = 0  # 0: unlimited; otherwise unfinished tasks beyond this get 429
    video_ttl_seconds: int = 3600
    fps: int = 24
    render_workers: int = 2
    faults: Faults = field(default_factory=Faults)


class NovitaEmulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.tasks: dict[str, Task] = {}
        self.submissions: list[dict[str, Any]] = []  # every accepted POST: what was paid for
        self.requests_seen: dict[str, int] = {"submit": 0, "result": 0, "video": 0, "throttled": 0, "errors": 0}
        self.served_videos: dict[str, bytes] = {}
        self._random = random.Random(self.config.faults.seed)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.config.render_workers, thread_name_prefix="render")
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
        return self.base_url

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def chance(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._random.random() < rate

    # -- task lifecycle -------------------------------------------------------------------------
    def status_of(self, task: Task, now: float) -> dict[str, Any]:
        cfg = self.config
        elapsed = now - task.created
        total = cfg.queue_seconds + cfg.generation_seconds
        info: dict[str, Any] = {"task_id": task.task_id, "task_type": "VIDU_Q2_TURBO_IMG2VIDEO", "reason": ""}
        if task.error or (task.fate == "fail" and elapsed >= total):
            return {
                **info,
                "status": "TASK_STATUS_FAILED",
                "reason": task.error or "content moderation: the image was rejected",
                "eta": 0,
                "progress_percent": 0,
            }
        if elapsed < cfg.queue_seconds:
            return {**info, "status": "TASK_STATUS_QUEUED", "eta": int(total - elapsed) + 1, "progress_percent": 0}
        if task.fate == "hang":
            return {**info, "status": "TASK_STATUS_PROCESSING", "eta": 0, "progress_percent": 42}
        if elapsed < total or not task.done.is_set():
            progress = min(99, int(100 * (elapsed - cfg.queue_seconds) / max(cfg.generation_seconds, 0.001)))
            return {
                **info,
                "status": "TASK_STATUS_PROCESSING",
                "eta": str(max(1, int(total - elapsed + 0.999))),
                "progress_percent": progress,
            }
        return {**info, "status": "TASK_STATUS_SUCCEED", "eta": 0, "progress_percent": 100}

    def unfinished(self, now: float) -> int:
        return sum(1 for t in self.tasks.values() if self.status_of(t, now)["status"] in ("TASK_STATUS_QUEUED", "TASK_STATUS_PROCESSING"))

    def _prepare(self, task: Task) -> None:
        try:
            image = _fetch_image(task.body["images"][0])
            task.video = render_video(image, task.body.get("resolution", "720p"), int(task.body.get("duration", 5)), self.config.fps)
        except Exception as exc:  # the provider reports what went wrong as the task's reason
            task.error = f"could not process the input image: {exc}"
        finally:
            task.done.set()

    def create_task(self, body: dict[str, Any]) -> Task:
        faults = self.config.faults
        fate = "fail" if self.chance(faults.fail) else "hang" if self.chance(faults.hang) else "succeed"
        task = Task(
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
                }
            )
        self._pool.submit(self._prepare, task)
        return task


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
    """The provider's field validation; returns the error message or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    unknown = set(body) - KNOWN_FIELDS
    if unknown:
        return f"unknown field(s): {', '.join(sorted(unknown))}"
    images = body.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
        return "images is required: an array of at least 1 image URL"
    for image in images:
        if not (image.startswith(("http://", "https://")) or image.startswith("data:image/")):
            return "images must be URLs or data:image/...;base64 URIs"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    if len(prompt) > 2000:
        return "prompt must be at most 2000 characters"
    duration = body.get("duration", 5)
    if type(duration) is not int or not 1 <= duration <= 10:
        return "duration must be an integer between 1 and 10"
    for name, allowed in ALLOWED.items():
        if name in body and body[name] not in allowed:
            return f"{name} must be one of {', '.join(allowed)}"
    for name in BOOLEANS:
        if name in body and not isinstance(body[name], bool):
            return f"{name} must be a boolean"
    if "seed" in body and type(body["seed"]) is not int:
        return "seed must be an integer"
    return None


class _Handler(BaseHTTPRequestHandler):
    emulator: NovitaEmulator

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"code": status, "reason": reason, "message": message, "metadata": {}}, headers)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.emulator.config.api_key}":
            self._error(401, "INVALID_API_KEY", "invalid or missing API key")
            return False
        return True

    def _api_faults(self) -> bool:
        """Slow answers, 5xx and 429 before anything is created: a faulted request costs nothing."""
        emulator, faults = self.emulator, self.emulator.config.faults
        if emulator.chance(faults.slow):
            time.sleep(faults.slow_seconds)
        if emulator.chance(faults.rate_5xx):
            emulator.requests_seen["errors"] += 1
            self._error(503, "SERVICE_UNAVAILABLE", "the service is temporarily unavailable")
            return True
        if emulator.chance(faults.rate_429):
            emulator.requests_seen["throttled"] += 1
            self._error(429, "RATE_LIMIT_EXCEEDED", "too many requests", {"Retry-After": "1"})
            return True
        return False

    def do_POST(self) -> None:
        emulator = self.emulator
        if urlsplit(self.path).path != SUBMIT_PATH:
            self._error(404, "NOT_FOUND", f"no such endpoint {self.path}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        emulator.requests_seen["submit"] += 1
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
            emulator.requests_seen["throttled"] += 1
            self._error(429, "TOO_MANY_CONCURRENT_TASKS", f"at most {limit} tasks may run at once", {"Retry-After": "2"})
            return
        task = emulator.create_task(body)
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
        emulator.requests_seen["result"] += 1
        if not self._authorized() or self._api_faults():
            return
        task_id = (parse_qs(parts.query).get("task_id") or [""])[0]
        task = emulator.tasks.get(task_id)
        if task is None:
            self._error(404, "TASK_NOT_FOUND", f"task {task_id} not found")
            return
        now = time.time()
        status = emulator.status_of(task, now)
        videos = []
        if status["status"] == "TASK_STATUS_SUCCEED":
            task.urls_issued += 1
            expires = now - 1 if task.expire_first_url and task.urls_issued == 1 else now + emulator.config.video_ttl_seconds
            videos.append(
                {
                    "video_url": f"{emulator.base_url}/videos/{task.task_id}.mp4?expires={expires:.3f}&n={task.urls_issued}",
                    "video_url_ttl": str(emulator.config.video_ttl_seconds),
                    "video_type": "mp4",
                }
            )
        self._send(
            200,
            {
                "extra": {"seed": str(task.body.get("seed", 158881667)), "debug_info": {"submit_time_ms": str(int(task.created * 1000))}},
                "task": status,
                "images": [],
                "videos": videos,
                "audios": [],
            },
        )

    def _serve_video(self, path: str, query: dict[str, list[str]]) -> None:
        emulator = self.emulator
        task = emulator.tasks.get(path.rsplit("/", 1)[-1].removesuffix(".mp4"))
        if task is None or task.video is None:
            self._error(404, "NOT_FOUND", "no such video")
            return
        if float((query.get("expires") or ["0"])[0]) < time.time():
            self._error(403, "URL_EXPIRED", "the video URL has expired")
            return
        emulator.requests_seen["video"] += 1
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
        self.wfile.write(data)
        emulator.served_videos[task.task_id] = data
