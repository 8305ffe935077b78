"""A loopback Lambda Invoke API that runs the real handlers in-process, errors reported as AWS reports them."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import unquote

from img2video_local.template import FunctionSpec

InvokeHook = Callable[[str, dict[str, Any], Any, BaseException | None], None]


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

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

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


class LocalFunctions:
    """The stack's functions, by name and ARN, each a real handler from functions/*/app.py."""

    def __init__(self, specs: dict[str, FunctionSpec], on_invoke: InvokeHook | None = None) -> None:
        self.specs = specs
        self.handlers = {logical: load_handler(spec) for logical, spec in specs.items()}
        self.on_invoke = on_invoke
        self.invocations: dict[str, int] = {logical: 0 for logical in specs}
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False
        self._idle = threading.Condition(self._lock)

    def find(self, name_or_arn: str) -> str:
        for logical, spec in self.specs.items():
            if name_or_arn in (spec.name, spec.arn, logical):
                return logical
        raise KeyError(name_or_arn)

    def invoke(self, logical: str, event: dict[str, Any]) -> Any:
        spec = self.specs[logical]
        with self._lock:
            if self._closed:  # the runtime is shutting down: behave like a throttled Lambda
                raise RuntimeError("local runtime is shutting down")
            self.invocations[logical] += 1
            self._running += 1
        context = LambdaContext(spec.name, spec.arn, spec.memory, spec.timeout, str(uuid.uuid4()))
        try:
            result = self.handlers[logical](event, context)
        except BaseException as exc:
            if self.on_invoke:
                self.on_invoke(logical, event, None, exc)
            raise
        finally:
            with self._lock:
                self._running -= 1
                self._idle.notify_all()
        if self.on_invoke:
            self.on_invoke(logical, event, result, None)
        return result

    def close(self, timeout: float = 30) -> None:
        """Refuse new invocations and wait for those under way (they must not outlive the environment)."""
        with self._lock:
            self._closed = True
            self._idle.wait_for(lambda: self._running == 0, timeout=timeout)


class _InvokeHandler(BaseHTTPRequestHandler):
    server: _InvokeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI owns the terminal
        pass

    def do_POST(self) -> None:
        parts = self.path.split("?", 1)[0].split("/")
        # /2015-03-31/functions/{name}/invocations, the name URL-encoded (an ARN has colons)
        if len(parts) != 5 or parts[2] != "functions" or parts[4] != "invocations":
            self._send(404, {"message": f"unknown path {self.path}"}, {"x-amzn-ErrorType": "ResourceNotFoundException"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        try:
            logical = self.server.functions.find(unquote(parts[3]))
        except KeyError:
            self._send(
                404,
                {"Type": "User", "message": f"Function not found: {unquote(parts[3])}"},
                {"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
            return
        try:
            result = self.server.functions.invoke(logical, payload)
        except Exception as exc:
            body = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_tb(exc.__traceback__)[-3:],
            }
            self._send(200, body, {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST"})
            return
        self._send(200, result, {"X-Amz-Executed-Version": "$LATEST"})

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
