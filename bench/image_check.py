"""The image check at acceptance: time, memory and bytes read, up to the largest image the contract accepts.

Each image is put in an in-process S3 (moto) and checked exactly as Accept checks it
(`accept._validated_image`: ranged GETs through our bounded client, then the header parser).
For comparison, "read whole + Pillow" fetches the object and asks Pillow for its size, as a check
that reads the file would. The S3 reads and bytes are counted through moto; the check's time (median of 5)
and memory (tracemalloc's peak) are measured on the bytes in memory, since moto holds a whole object to serve
any range of it, which S3 does not.
Run: `.venv/bin/python bench/image_check.py` (about a minute: building a 120-megapixel JPEG takes a while).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "img2video"), str(ROOT)]
for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ.setdefault(name, value)

import boto3  # noqa: E402
from img2video.aws import clients  # noqa: E402
from img2video.core.errors import PipelineError  # noqa: E402
from img2video.core.images import MAX_IMAGE_BYTES, check_image  # noqa: E402
from img2video.steps import accept  # noqa: E402
from moto import mock_aws  # noqa: E402
from PIL import Image  # noqa: E402

from tests.conftest import bomb_png  # noqa: E402

BUCKET = "bench-images"
MIB = 1024 * 1024


def jpeg(width: int, height: int, pad_to: int = 0, icc: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    picture.save(buffer, format="JPEG", quality=90, **({"icc_profile": icc} if icc else {}))
    data = buffer.getvalue()
    if len(data) >= pad_to:
        return data
    # grown to pad_to with comment segments after the frame header, where a parser that reads on would have to go
    sof = data.index(b"\xff\xc0")
    after_sof = sof + 2 + int.from_bytes(data[sof + 2 : sof + 4], "big")
    missing, comments = pad_to - len(data), []
    while missing > 4:
        length = min(65533, missing - 4)
        comments.append(b"\xff\xfe" + (length + 2).to_bytes(2, "big") + b"c" * length)
        missing -= length + 4
    return data[:after_sof] + b"".join(comments) + data[after_sof:]


def measure(what: Callable[[], object]) -> tuple[float, float, str]:
    times = []
    outcome = "accepted"
    for _ in range(5):
        start = time.perf_counter()
        try:
            what()
        except PipelineError as exc:
            outcome = f"refused ({exc.code})"
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    with contextlib.suppress(PipelineError):
        what()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times) * 1000, peak / MIB, outcome


def main() -> None:
    cases = {
        "small JPEG 640x400": jpeg(640, 400),
        "JPEG with a 400 KB ICC profile (2nd read)": jpeg(2000, 1500, icc=b"\x00" * 400_000),
        "largest accepted: 50 MB JPEG, 10954x10954 (120 MP)": jpeg(10954, 10954, pad_to=MAX_IMAGE_BYTES),
        "decompression bomb PNG 30000x30000": bomb_png(30000, 30000),
    }
    with mock_aws():
        clients.reset()
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        rows = []
        for name, data in cases.items():
            key = f"incoming/{len(rows)}.jpg"
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            reads: list[int] = []
            original = accept._read_range

            def counting(
                bucket: str, key: str, byte_range: str, original: Callable[..., bytes] = original, reads: list[int] = reads
            ) -> bytes:
                body = original(bucket, key, byte_range)
                reads.append(len(body))
                return body

            accept._read_range = counting  # type: ignore[assignment]
            try:
                _, _, outcome = measure(lambda key=key, size=len(data): accept._validated_image(BUCKET, key, size))
            finally:
                accept._read_range = original  # type: ignore[assignment]
            per_check = len(reads) // 6
            bytes_read = sum(reads) // 6
            # the check's own cost, without moto (which holds whole objects in memory to serve a range)
            header_ms, header_mib, _ = measure(
                lambda data=data: check_image("k", len(data), lambda offset, length: data[offset : offset + length])
            )

            def whole(key: str = key) -> None:
                body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                with contextlib.suppress(Image.DecompressionBombError):  # Pillow refuses it too, after reading it all
                    Image.open(io.BytesIO(body)).size  # noqa: B018

            whole_ms, whole_mib, _ = measure(whole)
            rows.append((name, len(data) / MIB, outcome, per_check, bytes_read / 1024, header_ms, header_mib, whole_ms, whole_mib))

    print("| image | size MiB | outcome | S3 reads | KiB read | check µs | check peak KiB | read whole + Pillow ms | peak MiB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        name, size, outcome, reads, kib, check_ms, check_mib, whole_ms, whole_mib = row
        check = f"{check_ms * 1000:.0f} | {check_mib * 1024:.0f}"
        print(f"| {name} | {size:.1f} | {outcome} | {reads} | {kib:.0f} | {check} | {whole_ms:.1f} | {whole_mib:.1f} |")


if __name__ == "__main__":
    main()
