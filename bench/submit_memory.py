"""Submit memory against inline image size: the old whole-string body against the streamed one.

A loopback HTTP server reads and discards each request body and answers {"task_id": "t"}. Each submit
runs in a fresh child process (so peaks do not mix), from an image file standing in for the S3 object:
- old: read the image whole, base64 it into a data: URI, and let requests json.dumps and encode the body;
- streamed: `NovitaClient.submit` with an `InlineImage`, encoded chunk by chunk as the body is sent.
It reports tracemalloc's peak (Python allocations) and the growth of the process's peak RSS.
Run: `.venv/bin/python bench/submit_memory.py`.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "img2video"))

# A key shaped like Novita's: the client masks it in every answer, so a one-letter key would mask the "k" of "task_id".
API_KEY = "sk-bench-0123456789abcdef"
MIB = 1024 * 1024
MB = 1000 * 1000
SIZES_MB = (1, 10, 50)
APPROACHES = ("old", "streamed")
SUBMIT_PATH = "/v3/async/vidu-q2-turbo-img2video"


class _Discard(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            piece = self.rfile.read(min(left, 64 * 1024))
            if not piece:
                break
            left -= len(piece)
        answer = b'{"task_id": "t"}'
        self.send_response(200 if not self.headers.get("Transfer-Encoding") else 411)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def _rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _submit_old(base_url: str, path: str) -> str:
    """What Submit did before: the whole image, its base64 text and the JSON body, all in memory at once."""
    import requests

    with open(path, "rb") as image:
        raw = image.read()
    uri = f"data:image/jpeg;base64,{base64.b64encode(raw).decode('ascii')}"
    del raw
    body: dict[str, Any] = {"images": [uri], "prompt": "a cat yawns", "duration": 5, "off_peak": True}
    response = requests.Session().post(
        f"{base_url}{SUBMIT_PATH}", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=(3.05, 30)
    )
    response.raise_for_status()
    return str(response.json()["task_id"])


def _submit_streamed(base_url: str, path: str) -> str:
    from img2video.novita.client import NovitaClient
    from img2video.novita.request_body import InlineImage

    # the streamed body closes each stream it opens, as it does S3's
    image = InlineImage(mime="image/jpeg", size=os.path.getsize(path), open=lambda: Path(path).open("rb"))  # noqa: SIM115
    body: dict[str, Any] = {"images": [image], "prompt": "a cat yawns", "duration": 5, "off_peak": True}
    return str(NovitaClient(base_url, API_KEY).submit(body))


def measure(approach: str, base_url: str, path: str) -> dict[str, float]:
    """One submit in this (fresh) process: tracemalloc's peak and how far the peak RSS rose above the start."""
    import requests  # noqa: F401  (imported before the baseline, so its modules are not counted)
    from img2video.novita import client as novita  # noqa: F401

    submit = {"old": _submit_old, "streamed": _submit_streamed}[approach]
    rss_before = _rss_now()
    tracemalloc.start()
    started = time.perf_counter()
    submit(base_url, path)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"peak": peak, "rss_growth": max(0, _rss_peak() - rss_before), "seconds": seconds}


def main() -> None:
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "img2video-bench")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size_mb in SIZES_MB:
            path = os.path.join(folder, f"{size_mb}.jpg")
            with open(path, "wb") as image:
                image.write(os.urandom(size_mb * MB))  # random, like compressed image data
            for approach in APPROACHES:
                child = subprocess.run(
                    [sys.executable, __file__, "--measure", approach, base_url, path], capture_output=True, text=True, check=True
                )
                rows.append((size_mb, approach, json.loads(child.stdout.strip().splitlines()[-1])))
    server.shutdown()

    body_mb = {size: (size * MB + 2) // 3 * 4 / MB for size in SIZES_MB}
    print(f"{'image':>6}  {'body':>8}  {'approach':<9}  {'tracemalloc peak':>16}  {'peak RSS growth':>15}  {'time':>6}")
    for size_mb, approach, figures in rows:
        print(
            f"{size_mb:>3} MB  {body_mb[size_mb]:>5.1f} MB  {approach:<9}  {figures['peak'] / MIB:>12.1f} MiB  "
            f"{figures['rss_growth'] / MIB:>11.1f} MiB  {figures['seconds']:>5.2f}s"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure(*sys.argv[2:5])))
    else:
        main()
