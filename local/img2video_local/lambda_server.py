"""A loopback Lambda Invoke API that runs the real handlers in-process, with Lambda's limits, errors reported as AWS reports them."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import threading
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from img2video_local.aws_faults import RUNTIME_EXIT, Invocation, abandon, install_hooks, running, uninstall_hooks
from img2video_local.template import PUBLISHED_VERSION, FunctionSpec

InvokeHook = Callable[[str, dict[str, Any], Any, BaseException | None], None]

MIB = 1024 * 1024
# What a python3.13 Lambda holds resident before the handler allocates anything: the runtime with boto3,
# Powertools (Logger, Metrics, Tracer with the X-Ray SDK, idempotency, parser), pydantic and requests
# imported and one S3 client created. Measured as VmRSS from /proc/self/status in a fresh subprocess doing
# exactly that (CPython 3.11 x86_64 here, 5 runs): 80.4 MiB every run; rounded up because Lambda's own
# bootstrap is not in that process. tracemalloc sees only what the handler allocates, so each invocation's
# budget is MemorySize minus this.
RUNTIME_BASELINE_MIB = 81
# Lambda's limits on a synchronous invocation's request and response payloads.
MAX_REQUEST_BYTES = 6 * MIB
MAX_RESPONSE_BYTES = 6_291_556
# How often the memory monitor closes a window. tracemalloc keeps each window's true peak, so a short
# spike is never missed; the interval only bounds how long an over-budget invocation runs on.
MEMORY_SAMPLE_SECONDS = 0.005

TIMED_OUT = "Sandbox.Timedout"
OUT_OF_MEMORY = "Runtime.OutOfMemory"


class Throttled(Exception):
    """Lambda refused the invocation: the account's concurrency is all in use (TooManyRequestsException, HTTP 429)."""


class LambdaError(Exception):
    """An error Lambda itself reports for an invocation (not one its handler raised); `error_type` is its errorType."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_message = message


def error_payload(error: BaseException) -> dict[str, Any]:
    """The body Lambda returns with X-Amz-Function-Error: Unhandled."""
    if isinstance(error, LambdaError):
        return {"errorType": error.error_type, "errorMessage": error.error_message}
    return {"errorType": type(error).__name__, "errorMessage": str(error), "stackTrace": traceback.format_tb(error.__traceback__)[-3:]}


@dataclass
class LambdaContext:
    """What a handler may read of its context (Powertools reads these)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds * self.time_scale

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(spec: FunctionSpec) -> Callable[[dict[str, Any], Any], Any]:
    module_name, function_name = spec.handler.rsplit(".", 1)
    path = spec.code_uri / f"{module_name.replace('.', '/')}.py"
    module_spec = importlib.util.spec_from_file_location(f"img2video_fn_{spec.logical_id}", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module: ModuleType = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    handler: Callable[[dict[str, Any], Any], Any] = getattr(module, function_name)
    return handler


@dataclass(eq=False)
class _Run:
    """One invocation as the runtime tracks it: settled once, by its handler or by Lambda giving up on it."""

    invocation: Invocation
    budget_bytes: int
    start_bytes: int = 0
    peak_bytes: int = 0  # the most it was seen to use above its start
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    result: Any = None
    error: BaseException | None = None
    settled: bool = False

    def finish(self, result: Any, error: BaseException | None) -> None:
        with self.lock:
            if not self.settled:
                self.settled, self.result, self.error = True, result, error
        self.done.set()

    def give_up(self, error_type: str) -> bool:
        """Abandon the invocation unless its handler has already finished; True if it was abandoned."""
        with self.lock:
            if self.settled:
                return False
            self.settled = True
            abandon(self.invocation, error_type)  # under the lock: the worker cannot leave running() before it is frozen
        self.done.set()
        return True


class _MemoryMonitor:
    """Samples tracemalloc for every invocation in the process: its peak is global, so one sampler owns reset_peak()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[_Run] = set()
        self._users = 0
        self._started_tracing = False
        self._wake = threading.Event()
        self._stop = threading.Event()  # a new one for each sampler thread, so a restart cannot revive the old one
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            if not tracemalloc.is_tracing():
                tracemalloc.start()
                self._started_tracing = True
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample_forever, args=(self._stop,), name="lambda-memory", daemon=True)
            self._thread.start()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users:
                return
            self._stop.set()
            self._wake.set()
            thread, self._thread = self._thread, None
        if thread:
            thread.join(timeout=1)
        with self._lock:
            if self._started_tracing and not self._users:
                tracemalloc.stop()
                self._started_tracing = False

    def begin(self, run: _Run) -> None:
        with self._lock:
            self._sample()  # closes the window of those already running, so the new one starts a fresh one
            run.start_bytes = tracemalloc.get_traced_memory()[0]
            self._active.add(run)
        self._wake.set()

    def end(self, run: _Run) -> None:
        """A last sample as the handler returns: a spike since the previous one still counts."""
        with self._lock:
            if run in self._active:
                self._sample()
                self._active.discard(run)

    def forget(self, run: _Run) -> None:
        with self._lock:
            self._active.discard(run)

    @contextmanager
    def not_a_lambda(self) -> Iterator[None]:
        """Allocations made inside are the caller's (a test driver uploading a 50 MB image into moto), not a Lambda's.

        Sampling waits meanwhile; afterwards the net growth is taken off every running invocation's account, so
        the upload's copies and the object moto keeps are charged to nobody. A Lambda allocating in the same short
        window is excused for that window only: the one way this is kinder than AWS, where uploads happen elsewhere.
        """
        with self._lock:
            self._sample()  # what the invocations used so far is theirs
            before = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
            try:
                yield
            finally:
                if tracemalloc.is_tracing():
                    grown = max(0, tracemalloc.get_traced_memory()[0] - before)
                    tracemalloc.reset_peak()
                    for run in self._active:
                        run.start_bytes += grown

    def _sample_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                if self._active:
                    self._sample()
                idle = not self._active
            if idle:
                self._wake.wait()
                self._wake.clear()
            else:
                stop.wait(MEMORY_SAMPLE_SECONDS)

    def _sample(self) -> None:
        # Every invocation running during the window is charged the window's peak above its own start: under
        # concurrency one may be charged for another's allocations, never the reverse (never kinder than AWS).
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for run in list(self._active):
            used = max(0, peak - run.start_bytes)
            run.peak_bytes = max(run.peak_bytes, used)
            if used > run.budget_bytes and run.give_up(OUT_OF_MEMORY):
                self._active.discard(run)


_monitor = _MemoryMonitor()
not_a_lambda = _monitor.not_a_lambda


class LocalFunctions:
    """The stack's functions, by name and ARN, each a real handler from functions/*/app.py, run within its limits.

    Each invocation runs in a worker thread. Past its Timeout (scaled by `time_scale`) or its MemorySize it is
    abandoned and reported as Lambda reports it; the thread cannot be killed, so its AWS and HTTP calls are
    frozen instead (aws_faults).

    tracemalloc runs while any LocalFunctions is open, and it taxes every allocation: measured here, 300 moto S3
    put+get pairs ran 3.4x slower, a JSON round trip of 20,000 records 5.1x, 50,000 pydantic validations 2.6x,
    large buffers 1.0x. A handler close to its Timeout can therefore time out locally before it would on AWS.
    `memory_limits=False` leaves tracemalloc off and MemorySize unenforced: only for a benchmark of scheduling
    (bench/burst.py), where that tax would make local mode's own CPU the bottleneck; every test enforces them.
    """

    def __init__(
        self,
        specs: dict[str, FunctionSpec],
        on_invoke: InvokeHook | None = None,
        time_scale: float = 1.0,
        memory_limits: bool = True,
        account_concurrency: int | None = None,
        function_concurrency: dict[str, int] | None = None,
    ) -> None:
        self.specs = specs
        # an account's concurrent executions quota (a new account may have 10): invocations beyond it are throttled
        self.account_concurrency = account_concurrency
        # a function's own limit, as ReservedConcurrentExecutions sets it: invocations of it beyond are throttled
        self.function_concurrency = {
            **{logical: spec.reserved_concurrency for logical, spec in specs.items() if spec.reserved_concurrency is not None},
            **(function_concurrency or {}),
        }
        self.throttled: dict[str, int] = {logical: 0 for logical in specs}
        self._running_of: dict[str, int] = {logical: 0 for logical in specs}
        self.memory_limits = memory_limits
        self.handlers = {logical: load_handler(spec) for logical, spec in specs.items()}
        self.on_invoke = on_invoke
        self.time_scale = time_scale
        self.invocations: dict[str, int] = {logical: 0 for logical in specs}
        self.peak_memory_mib: dict[str, float] = {logical: 0.0 for logical in specs}  # the most any invocation used, baseline included
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False
        self._released = False
        self._idle = threading.Condition(self._lock)
        install_hooks()
        if memory_limits:
            _monitor.acquire()

    def find(self, name_or_arn: str, qualifier: str | None = None) -> str:
        """The function a name or ARN (qualified or not, as Invoke takes it) names; KeyError for none, or for a version
        or alias the function does not have (Lambda answers ResourceNotFoundException)."""
        name, qualifier = split_qualifier(name_or_arn, qualifier)
        for logical, spec in self.specs.items():
            if name in (spec.name, spec.arn, logical):
                if qualifier is not None and qualifier not in spec.qualifiers:
                    raise KeyError(name_or_arn)
                return logical
        raise KeyError(name_or_arn)

    def invoke(self, logical: str, event: dict[str, Any]) -> Any:
        spec = self.specs[logical]
        with self._lock:
            if self._closed:  # the runtime is shutting down: behave like a throttled Lambda
                raise RuntimeError("local runtime is shutting down")
            own_limit = self.function_concurrency.get(logical)
            if (self.account_concurrency is not None and self._running >= self.account_concurrency) or (
                own_limit is not None and self._running_of[logical] >= own_limit
            ):
                self.throttled[logical] += 1
                raise Throttled("Rate Exceeded.")
            self._running_of[logical] += 1
            self.invocations[logical] += 1
            self._running += 1
        try:
            result = self._run(spec, event)
        except BaseException as exc:
            if self.on_invoke:
                self.on_invoke(logical, event, None, exc)
            raise
        finally:
            with self._lock:
                self._running -= 1
                self._running_of[logical] -= 1
                self._idle.notify_all()
        if self.on_invoke:
            self.on_invoke(logical, event, result, None)
        return result

    def _run(self, spec: FunctionSpec, event: dict[str, Any]) -> Any:
        request_id = str(uuid.uuid4())
        run = _Run(Invocation(spec.logical_id, request_id), budget_bytes=(spec.memory - RUNTIME_BASELINE_MIB) * MIB)
        # The handler gets its own copy, deserialized as Lambda would: it cannot share objects with its caller.
        own_event = json.loads(json.dumps(event))
        context = LambdaContext(spec.name, spec.arn, spec.memory, spec.timeout, request_id, time_scale=self.time_scale)
        if self.memory_limits:
            _monitor.begin(run)
        try:
            handler = self.handlers[spec.logical_id]
            worker = threading.Thread(
                target=self._work, args=(run, handler, own_event, context), name=f"lambda-{spec.logical_id}", daemon=True
            )
            worker.start()
            if not run.done.wait(spec.timeout * self.time_scale):
                run.give_up(TIMED_OUT)
        finally:
            _monitor.forget(run)
        with self._lock:
            used_mib = RUNTIME_BASELINE_MIB + run.peak_bytes / MIB
            self.peak_memory_mib[spec.logical_id] = round(max(self.peak_memory_mib[spec.logical_id], used_mib), 1)
        if run.invocation.abandoned == TIMED_OUT:
            raise LambdaError(TIMED_OUT, f"RequestId: {request_id} Error: Task timed out after {spec.timeout:.2f} seconds")
        if run.invocation.abandoned == OUT_OF_MEMORY:
            raise LambdaError(OUT_OF_MEMORY, f"RequestId: {request_id} Error: Runtime exited with error: signal: killed")
        if run.invocation.abandoned == RUNTIME_EXIT:
            raise LambdaError(RUNTIME_EXIT, f"RequestId: {request_id} Error: Runtime exited with error: signal: killed")
        if run.error is not None:
            raise run.error
        return _marshal(run.result)

    @staticmethod
    def _work(run: _Run, handler: Callable[[dict[str, Any], Any], Any], event: dict[str, Any], context: LambdaContext) -> None:
        with running(run.invocation):
            try:
                result = handler(event, context)
            except BaseException as exc:  # an abandoned invocation ends here too, its InvocationAbandoned discarded
                _monitor.end(run)
                run.finish(None, exc)
            else:
                _monitor.end(run)
                run.finish(result, None)

    def close(self, timeout: float = 30) -> None:
        """Refuse new invocations and wait for those under way (they must not outlive the environment)."""
        with self._lock:
            self._closed = True
            self._idle.wait_for(lambda: self._running == 0, timeout=timeout)
            if self._released:
                return
            self._released = True
        if self.memory_limits:
            _monitor.release()
        uninstall_hooks()


def split_qualifier(name_or_arn: str, qualifier: str | None = None) -> tuple[str, str | None]:
    """("name", "1") from "arn:aws:lambda:REGION:ACCOUNT:function:name:1", "name:1", or "name" with Qualifier "1"."""
    parts = name_or_arn.split(":")
    if name_or_arn.startswith("arn:") and len(parts) == 8:
        name_or_arn, qualifier = ":".join(parts[:7]), parts[7]
    elif not name_or_arn.startswith("arn:") and len(parts) == 2:
        name_or_arn, qualifier = parts
    return name_or_arn, qualifier


def _marshal(result: Any) -> Any:
    """The result as the caller of a real Lambda gets it: JSON, at most 6 MB."""
    try:
        data = json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise LambdaError("Runtime.MarshalError", f"Unable to marshal response: {exc}") from None
    if len(data.encode()) > MAX_RESPONSE_BYTES:
        raise LambdaError(
            "Function.ResponseSizeTooLarge", f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
        )
    return json.loads(data)


def _discard(body: io.BufferedIOBase, length: int) -> None:
    """Read a request body to its end without keeping it, as Lambda does before refusing it, so the client sees the
    answer rather than a reset connection."""
    while length > 0:
        chunk = body.read(min(length, 1 << 20))
        if not chunk:
            return
        length -= len(chunk)


class _InvokeHandler(BaseHTTPRequestHandler):
    server: _InvokeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI owns the terminal
        pass

    def do_POST(self) -> None:
        parts = self.path.split("?", 1)[0].split("/")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            _discard(self.rfile, length)  # read it all, as Lambda does, so the client sees the answer rather than a reset
            message = f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
            self._send(413, {"Type": "User", "message": message}, {"x-amzn-ErrorType": "RequestTooLargeException"})
            return
        body = self.rfile.read(length)
        # /2015-03-31/functions/{name}/invocations, the name URL-encoded (an ARN has colons)
        if len(parts) != 5 or parts[2] != "functions" or parts[4] != "invocations":
            self._send(404, {"message": f"unknown path {self.path}"}, {"x-amzn-ErrorType": "ResourceNotFoundException"})
            return
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            message = f"Could not parse request body into json: {exc}"
            self._send(400, {"Type": "User", "message": message}, {"x-amzn-ErrorType": "InvalidRequestContentException"})
            return
        try:
            name, qualifier = split_qualifier(unquote(parts[3]), parse_qs(urlsplit(self.path).query).get("Qualifier", [None])[0])
            logical = self.server.functions.find(name, qualifier)
            # a version, or an alias, which runs the version it points at
            executed = "$LATEST" if qualifier in (None, "$LATEST") else PUBLISHED_VERSION
        except KeyError:
            self._send(
                404,
                {"Type": "User", "message": f"Function not found: {unquote(parts[3])}"},
                {"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
            return
        try:
            result = self.server.functions.invoke(logical, payload)
        except Throttled as exc:
            refused = {"Type": "User", "message": str(exc), "Reason": "ConcurrentInvocationLimitExceeded"}
            self._send(429, refused, {"x-amzn-ErrorType": "TooManyRequestsException"})
            return
        except Exception as exc:
            self._send(200, error_payload(exc), {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": executed})
            return
        self._send(200, result, {"X-Amz-Executed-Version": executed})

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


class _InvokeServer(ThreadingHTTPServer):
    daemon_threads = True
    functions: LocalFunctions


def start_invoke_server(functions: LocalFunctions) -> tuple[_InvokeServer, str]:
    server = _InvokeServer(("127.0.0.1", 0), _InvokeHandler)
    server.functions = functions
    threading.Thread(target=server.serve_forever, name="lambda-invoke", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# -- Function URLs: an HTTP request in, the function's HTTP answer out, as Lambda's URL front end does it ------------


class _FunctionUrlHandler(BaseHTTPRequestHandler):
    """Payload format 2.0 (what a Function URL gives the function), and its answer mapped back to HTTP. A function that
    fails, times out or runs out of memory answers 502, as a real Function URL does; so does a malformed answer."""

    server: _FunctionUrlServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            _discard(self.rfile, length)
            self._reply(413, {"Content-Type": "application/json"}, b'{"Message":"Request must be smaller than 6291456 bytes"}')
            return
        raw = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        try:
            text, encoded = raw.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(raw).decode(), True
        now = time.time()
        event = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": query,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "requestContext": {
                "accountId": "anonymous",
                "apiId": self.server.url_id,
                "domainName": f"{self.server.url_id}.lambda-url.us-east-1.on.aws",
                "domainPrefix": self.server.url_id,
                "http": {
                    "method": self.command,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": self.client_address[0],
                    "userAgent": self.headers.get("User-Agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": "$default",
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": encoded,
        }
        if raw:
            event["body"] = text
        if self.server.functions is None:  # the stack is still being made
            self._reply(503, {"Content-Type": "application/json"}, b'{"Message":"Service Unavailable"}')
            return
        try:
            result = self.server.functions.invoke(self.server.function, event)
        except Exception:
            self._reply(502, {"Content-Type": "application/json"}, b'{"Message":"Internal Server Error"}')
            return
        self._answer(result)

    def _answer(self, result: Any) -> None:
        if not (isinstance(result, dict) and "statusCode" in result):  # anything else is a 200 with the result as JSON
            self._reply(200, {"Content-Type": "application/json"}, json.dumps(result).encode())
            return
        try:
            status = int(result["statusCode"])
            body = result.get("body") or ""
            data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
            headers = {str(name): str(value) for name, value in (result.get("headers") or {}).items()}
        except (TypeError, ValueError):
            self._reply(502, {"Content-Type": "application/json"}, b'{"Message":"Internal Server Error"}')
            return
        self._reply(status, headers, data)

    def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the caller gave up waiting (Novita waits 5 s)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class _FunctionUrlServer(ThreadingHTTPServer):
    daemon_threads = True
    functions: LocalFunctions | None = None
    function: str
    url_id: str


class FunctionUrls:
    """Local Function URLs: each serves one function of a LocalFunctions that may be created after the URL (the URL is
    in the functions' environment, so it must exist first)."""

    def __init__(self) -> None:
        self._servers: dict[str, _FunctionUrlServer] = {}
        self.functions: LocalFunctions | None = None

    def serve(self, function: str) -> str:
        server = _FunctionUrlServer(("127.0.0.1", 0), _FunctionUrlHandler)
        server.function, server.url_id = function, uuid.uuid4().hex
        self._servers[function] = server
        threading.Thread(target=server.serve_forever, name=f"function-url-{function}", daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/"

    def attach(self, functions: LocalFunctions) -> None:
        for server in self._servers.values():
            server.functions = functions

    def close(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()
