"""The SNS notice: its schema, how it reads in e-mail, and publishing it once per job."""

from __future__ import annotations

import json
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from img2video.core.registry import DEFAULT_MODEL
from img2video.core.text import map_text, sendable, shorten

NOTICE_VERSION = "1"


MAX_ERROR_MESSAGE_CHARS = 2000  # whatever an error says, the notice stays far below SNS's 256 KiB


class NoticeError(BaseModel):
    code: str
    message: str
    stage: Literal["submit", "poll", "store", "notify"]

    @field_validator("message")
    @classmethod
    def _short_enough(cls, message: str) -> str:
        return shorten(message, MAX_ERROR_MESSAGE_CHARS)


class BatchRef(BaseModel):
    """Which batch, and which of its lines, a job is: carried by the job, its notice and its events."""

    model_config = ConfigDict(frozen=True)

    batch_id: str
    manifest: dict[str, str]  # bucket, key
    line: int


class NoticeVideo(BaseModel):
    bucket: str
    key: str
    size_bytes: int
    sha256: str
    url: str


class Notice(BaseModel):
    """The message every subscriber receives: one per job, `notice_id` stable per job and outcome."""

    model_config = ConfigDict(frozen=True)

    version: str = NOTICE_VERSION
    event: Literal["video.succeeded", "video.failed"]
    notice_id: str
    job_id: str
    attempt: int = 1
    task_id: str | None = None
    source: dict[str, str]
    video: NoticeVideo | None = None
    request: dict[str, Any] | None = None
    error: NoticeError | None = None
    tags: dict[str, str] = {}
    timings: dict[str, Any] = {}
    batch: BatchRef | None = None  # the manifest and line this job came from; absent for a dropped pair

    @model_validator(mode="before")
    @classmethod
    def _always_sendable(cls, data: Any) -> Any:
        """A notice must always serialise: any text that cannot be UTF-8 (a lone surrogate) is written as its escape."""
        return map_text(data, sendable)


def success_notice(
    *,
    job_id: str,
    attempt: int,
    task_id: str,
    source: dict[str, str],
    video: NoticeVideo,
    request: dict[str, Any],
    tags: dict[str, str],
    timings: dict[str, Any],
    batch: BatchRef | None = None,
) -> Notice:
    return Notice(
        event="video.succeeded",
        notice_id=f"{job_id}:succeeded",
        job_id=job_id,
        attempt=attempt,
        task_id=task_id,
        source=source,
        video=video,
        request=request,
        tags=tags,
        timings=timings,
        batch=batch,
    )


def failure_notice(
    *,
    job_id: str,
    attempt: int,
    source: dict[str, str],
    error: NoticeError,
    task_id: str | None = None,
    request: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    timings: dict[str, Any] | None = None,
    batch: BatchRef | None = None,
) -> Notice:
    return Notice(
        event="video.failed",
        notice_id=f"{job_id}:failed",
        job_id=job_id,
        attempt=attempt,
        task_id=task_id,
        source=source,
        request=request,
        error=error,
        tags=tags or {},
        timings=timings or {},
        batch=batch,
    )


def _file_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def subject(notice: Notice) -> str:
    """SNS subjects must be ASCII, one line, under 100 characters."""
    if notice.video is not None:
        text = f"Video ready: {_file_name(notice.video.key)}"
    else:
        code = notice.error.code if notice.error else "INTERNAL"
        text = f"Video failed ({code}): {_file_name(notice.source['key'])}"
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    ascii_text = "".join(ch for ch in ascii_text if ch.isprintable())
    return ascii_text[:99]


def email_text(notice: Notice) -> str:
    lines: list[str]
    source = f"s3://{notice.source['bucket']}/{notice.source['key']}"
    if notice.video is not None:
        lines = [
            "Your video is ready.",
            "",
            f"Image:    {source}",
            f"Video:    s3://{notice.video.bucket}/{notice.video.key} ({notice.video.size_bytes:,} bytes)",
            f"Download: {notice.video.url}",
            "          (this link expires; the video stays in S3)",
        ]
    else:
        error = notice.error or NoticeError(code="INTERNAL", message="unknown error", stage="notify")
        lines = [
            "Your video could not be made.",
            "",
            f"Image:  {source}",
            f"Error:  {error.code} (at {error.stage})",
            f"Reason: {error.message}",
        ]
    if notice.request:
        lines += ["", f"Prompt: {notice.request.get('prompt', '')}"]
    lines += ["", f"Job: {notice.job_id} (attempt {notice.attempt})" + (f"  Task: {notice.task_id}" if notice.task_id else "")]
    return "\n".join(lines)


def sns_publish_arguments(notice: Notice, topic_arn: str) -> dict[str, Any]:
    """Everything sns.publish needs: JSON for machines, text for e-mail, attributes for filter policies."""
    message = notice.model_dump_json()
    resolution = (notice.request or {}).get("resolution", "none")
    return {
        "TopicArn": topic_arn,
        "Subject": subject(notice),
        "MessageStructure": "json",
        # UTF-8 as it is (not \\u-escaped, which would triple an emoji's bytes): the worst notice fits SNS's 256 KiB
        "Message": json.dumps({"default": message, "email": email_text(notice)}, ensure_ascii=False),
        "MessageAttributes": {
            "event": {"DataType": "String", "StringValue": notice.event},
            "resolution": {"DataType": "String", "StringValue": str(resolution)},
            "model": {"DataType": "String", "StringValue": (notice.request or {}).get("model", DEFAULT_MODEL)},
        },
    }
