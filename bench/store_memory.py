"""Store memory against video size: the streaming copy holds about one 8 MiB part, whatever the video's size.

A loopback HTTP server serves videos of growing size; `stream_video_to_s3` copies each to an S3 stub that
counts and discards parts (so the figure is the pipeline's own memory, not a mock's storage). Peak memory
is measured with tracemalloc. Run: `.venv/bin/python bench/store_memory.py`.
"""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "img2video"))

from img2video.aws import video_transfer

MIB = 1024 * 1024
CHUNK = b"\x00" * MIB


class _Video(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        size = int(self.path.strip("/").split(".")[0]) * MIB
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"\x00\x00\x00\x18ftypmp42" + CHUNK[12:])
        for _ in range(size // MIB - 1):
            self.wfile.write(CHUNK)


class _DiscardingS3:
    def __init__(self) -> None:
        self.bytes = 0

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, str]:
        return {"UploadId": "u"}

    def upload_part(self, Body: bytes, PartNumber: int, **kwargs: Any) -> dict[str, str]:
        self.bytes += len(Body)
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, **kwargs: Any) -> None:
        pass

    def abort_multipart_upload(self, **kwargs: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Video)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"{'video MiB':>10} {'parts':>6} {'peak traced MiB':>16} {'peak / video':>13} {'seconds':>8}")
    print("-" * 57)
    for size in (8, 32, 128, 512):
        stub = _DiscardingS3()
        video_transfer.transfer_client = lambda stub=stub: stub  # type: ignore[assignment]
        tracemalloc.start()
        started = time.perf_counter()
        stored = video_transfer.stream_video_to_s3(f"{base}/{size}.mp4", "b", "k", {}, allow_loopback_http=True)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert stored.size_bytes == stub.bytes == size * MIB
        parts = -(-size * MIB // video_transfer.PART_SIZE)
        print(f"{size:>10} {parts:>6} {peak / MIB:>16.1f} {peak / (size * MIB):>13.3f} {seconds:>8.2f}")
    server.shutdown()


if __name__ == "__main__":
    main()
