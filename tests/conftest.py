"""Shared fixtures: a moto stack built from template.yaml, with the functions' environment applied."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from hypothesis import strategies as st
from img2video.aws.clients import reset
from img2video.core.settings import Settings
from img2video.observability import logger
from img2video_local.aws_faults import Invocation, enforce_iam, running, stop_enforcing_iam
from img2video_local.moto_patches import serialize_dynamodb_requests, serialize_sqs_requests
from img2video_local.stack import LocalStack, provision
from img2video_local.template import REGION, Template
from moto import mock_aws

API_KEY = "sk-test-SECRET-9f8e7d6c5b4a"
NOVITA = "https://api.novita.test"

warnings.filterwarnings("ignore", message="Couldn't determine the remaining time left")


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    reset()
    yield
    reset()


@dataclass
class Aws:
    stack: LocalStack
    s3: Any
    sqs: Any
    sfn: Any
    notices_queue: str

    @property
    def input_bucket(self) -> str:
        return self.stack.id("InputBucket")

    @property
    def output_bucket(self) -> str:
        return self.stack.id("OutputBucket")

    def notices(self) -> list[dict[str, Any]]:
        """Every notice published so far (SNS → SQS subscription), each as its parsed JSON with attributes."""
        found = []
        while True:
            answer = self.sqs.receive_message(QueueUrl=self.notices_queue, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                envelope = json.loads(message["Body"])
                notice = json.loads(envelope["Message"])
                notice["_attributes"] = {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()}
                notice["_subject"] = envelope.get("Subject")
                found.append(notice)
                self.sqs.delete_message(QueueUrl=self.notices_queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """The template's stack in moto (no Step Functions execution: handlers are tested one at a time)."""
    # each DynamoDB and SQS request whole, as on AWS (moto's are not: concurrent conditional writes could both pass)
    serialize_dynamodb_requests()
    serialize_sqs_requests()
    with mock_aws():
        template = Template.load({"NovitaBaseUrl": NOVITA, "SidecarGraceSeconds": "60"})
        stack = provision(template, API_KEY)
        for name, value in stack.environment.items():
            monkeypatch.setenv(name, value)
        reset()
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="test-notices")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        boto3.client("sns", region_name=REGION).subscribe(TopicArn=stack.id("NoticesTopic"), Protocol="sqs", Endpoint=arn)
        # a handler the tests run as its function (as_function) calls AWS only as its role allows, as in local mode
        enforce_iam(stack.policies)
        try:
            yield Aws(stack, boto3.client("s3", region_name=REGION), sqs, boto3.client("stepfunctions", region_name=REGION), queue)
        finally:
            stop_enforcing_iam(stack.policies)


def as_function(function: str, handler: Any) -> Any:
    """`handler`, run as `function`'s invocation: its AWS calls under the function's role (and its faults, if any)."""

    def invoke(event: Any, context: Any) -> Any:
        with running(Invocation(function, "req-unit")):
            return handler(event, context)

    return invoke


def stack_settings(**overrides: Any) -> Settings:
    """Settings with every required resource named, for code under test that takes them as an argument."""
    required = {"input_bucket": "in", "output_bucket": "out", "topic_arn": "arn:t", "idempotency_table": "t", "jobs_table": "j"}
    return Settings(**{**required, "novita_secret_id": "s", **overrides})


def jpeg_bytes(width: int = 160, height: int = 128, color: tuple[int, int, int] = (200, 100, 50)) -> bytes:
    return image_bytes(width, height, "JPEG", color=color)


def png_bytes(width: int = 160, height: int = 128) -> bytes:
    return image_bytes(width, height, "PNG", color=(10, 200, 30))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of all zeros: a ~110 KB file that declares width × height pixels (a decompression bomb)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor, parts = zlib.compressobj(9), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def image_bytes(width: int, height: int, fmt: str = "PNG", frames: int = 1, color: tuple[int, int, int] | str = "red") -> bytes:
    """An image of any size and format, one color; `frames` > 1 makes an animated PNG or WebP, a color per frame."""
    import io

    from PIL import Image

    colors: list[tuple[int, int, int] | str] = [color, "green", "blue", "white"]
    images = [Image.new("RGB", (width, height), colors[i % 4]) for i in range(frames)]
    buffer = io.BytesIO()
    options = {"save_all": True, "append_images": images[1:], "duration": 100, "loop": 0} if frames > 1 else {}
    images[0].save(buffer, format=fmt, **options)
    return buffer.getvalue()


# Any code point for hypothesis, lone surrogates included, and often the ones that broke the pipeline before.
ANY_CHAR = st.characters(exclude_categories=()) | st.sampled_from(["\ud83d", "\udfff", "\u200b", "\ufeff", "\x00", "\x01", "\u202e", '"'])


def any_text(max_size: int) -> st.SearchStrategy[str]:
    """Text from ANY_CHAR (st.text() never draws a lone surrogate)."""
    return st.lists(ANY_CHAR, max_size=max_size).map("".join)


def s3_event(bucket: str, key: str, event_time: str = "2026-11-24T12:00:00.000Z") -> dict[str, Any]:
    """An S3 ObjectCreated notification as S3 writes it: the key URL-encoded with + for spaces."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": REGION,
                "eventTime": event_time,
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/"), "size": 1}},
            }
        ]
    }


def sqs_event(*bodies: dict[str, Any] | str, receive_count: int = 1) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{index}",
                "receiptHandle": f"r{index}",
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "0"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:q",
                "awsRegion": REGION,
            }
            for index, body in enumerate(bodies)
        ]
    }


class FakeContext:
    function_name = "test"
    memory_limit_in_mb = 128
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:test"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30000


os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "img2video")


_IAM_FROM_WORKERS: list[dict[str, Any]] = []


def _iam_here() -> dict[str, Any]:
    from img2video_local import iam

    return iam.summary([p for p in iam.ENFORCED if p.checked])


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A test worker of a parallel run hands what IAM saw to the session that reports."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["iam"] = json.dumps(_iam_here())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    report = getattr(node, "workeroutput", {}).get("iam")
    if report:
        _IAM_FROM_WORKERS.append(json.loads(report))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """IAM as local mode enforced it in this run: calls checked, denied, and the grants no call used."""
    from img2video_local import iam

    checked, denied, unused = iam.report([_iam_here(), *_IAM_FROM_WORKERS])
    if not checked:
        return
    terminalreporter.section("IAM (local mode enforces each role of the SAM-translated template)")
    terminalreporter.write_line(f"{checked} calls checked, {denied} denied; {len(unused)} grants no call in this run used:")
    for statement, action in unused:
        terminalreporter.write_line(f"  {statement}  {action}")


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """What the functions log from now on (Powertools' handler keeps the stream it was made with: capsys never sees it)."""
    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger(logger.service).handlers if isinstance(h, logging.StreamHandler)]
    before = [handler.setStream(buffer) for handler in handlers]
    try:
        yield buffer
    finally:
        for handler, stream in zip(handlers, before, strict=True):
            handler.setStream(stream)
