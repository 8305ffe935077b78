"""Taking a job in: the S3 reads that check its images, its item in the jobs table, its one execution, and its
failure notice when it cannot be taken. Accept (a dropped pair) and Batch (a manifest's line) both take jobs here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from img2video.aws.clients import client
from img2video.aws.job_events import job_changed
from img2video.aws.jobs_table import open_attempt
from img2video.aws.notify import publish_notice
from img2video.aws.s3_objects import is_missing
from img2video.core.clock import iso, now
from img2video.core.errors import InvalidSidecar, UnsupportedImage
from img2video.core.images import ImageHeader, check_image, end_frame_problem
from img2video.core.jobs import Job, SourceObject
from img2video.core.keys import IMAGE_SUFFIXES, MAX_KEY_BYTES, resolve_relative
from img2video.core.notices import BatchRef, NoticeError, failure_notice
from img2video.core.registry import ModelSpec
from img2video.core.settings import Settings
from img2video.core.sidecar import VideoRequest
from img2video.observability import logger, metrics


def head(bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return dict(client("s3").head_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def etag(head: dict[str, Any]) -> str:
    return str(head.get("ETag", "")).strip('"')


def read_range(bucket: str, key: str, byte_range: str) -> bytes:
    body: bytes = client("s3").get_object(Bucket=bucket, Key=key, Range=byte_range)["Body"].read()
    return body


def validated_image(bucket: str, key: str, size: int, spec: ModelSpec) -> ImageHeader:
    """Type, dimensions, animation and completeness from the image's header and last bytes, against the model's image
    rules: at most three ranged reads."""
    return check_image(
        key, size, lambda offset, length: read_range(bucket, key, f"bytes={offset}-{offset + length - 1}"), spec.image, spec.name
    )


def image_key_named(relative: str, folder: str, settings: Settings) -> str | None:
    """The key of an image a sidecar or a manifest's line names relative to its folder, or None when it climbs out of
    the input prefix, is not a .jpg/.jpeg/.png/.webp, or is over S3's key length."""
    resolved = resolve_relative(folder, relative, settings.input_prefix)
    if resolved is None or not resolved.lower().endswith(IMAGE_SUFFIXES) or len(resolved.encode()) > MAX_KEY_BYTES:
        return None
    return resolved


def image_beside(relative: str, field: str, folder: str, settings: Settings, spec: ModelSpec) -> tuple[str, ImageHeader]:
    """An image a sidecar names (an end frame, an extra image): its key, once it exists and the model can take it."""
    shown = json.dumps(relative, ensure_ascii=False)
    resolved = image_key_named(relative, folder, settings)
    if resolved is None:
        raise InvalidSidecar(
            f'"{field}" entry {shown} must name a .jpg, .jpeg, .png or .webp '
            f"file inside {settings.input_prefix} (relative to the sidecar's folder {folder}), its key at most {MAX_KEY_BYTES} bytes"
        )
    found = head(settings.input_bucket, resolved)
    if found is None:
        raise InvalidSidecar(f'"{field}" entry {shown} does not exist: no object at {resolved}')
    return resolved, validated_image(settings.input_bucket, resolved, int(found["ContentLength"]), spec)


def extra_image_keys(request_extra: tuple[str, ...], folder: str, settings: Settings, spec: ModelSpec) -> list[str]:
    return [image_beside(relative, "extra_images", folder, settings, spec)[0] for relative in request_extra]


def end_image_key(request: VideoRequest, first: ImageHeader, folder: str, settings: Settings) -> str | None:
    if request.end_image is None:
        return None
    key, header = image_beside(request.end_image, "end_image", folder, settings, request.spec)
    problem = end_frame_problem(first, header, request.spec.end_aspect_tolerance, key)
    if problem:
        raise UnsupportedImage(problem)
    return key


# --- the job's one execution -------------------------------------------------------------------


def start_named_execution(state_machine_arn: str, name: str, data: dict[str, Any]) -> bool:
    """Start the execution named `name`; False when a repeated event finds it started (nothing changes)."""
    try:
        client("stepfunctions").start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(data))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ExecutionAlreadyExists":
            raise
        logger.info("Execution already exists; nothing to start")
        return False
    return True


def start_execution(job: Job, settings: Settings) -> None:
    """Start the job's execution, named after the job: a repeated event finds it started and changes nothing."""
    # the submit window travels with the job: SubmitToNovita reads it as its TimeoutSecondsPath
    state = {"job": job.model_dump(mode="json"), "accepted_at": iso(now()), "submit_window_seconds": settings.submit_window_seconds}
    if start_named_execution(settings.state_machine_arn, job.job_id, state):
        metrics.add_metric(name="JobsAccepted", unit=MetricUnit.Count, value=1)


def accept_job(job: Job, pending: PendingJob, settings: Settings) -> None:
    """The job is accepted: its "accepted" event once per job (not per event that found it), then its execution, so
    the event comes before every other of the job's."""
    if pending.new:
        job_changed(job, "accepted", accepted_at=iso(now()))
    start_execution(job, settings)


@dataclass
class PendingJob:
    """What is known of a job before it is accepted: enough to send its failure notice."""

    job_id: str
    source: SourceObject
    sidecar_key: str = ""
    uploaded_at: str = ""
    sidecar_uploaded_at: str = ""
    request: dict[str, Any] | None = None
    tags: dict[str, str] | None = None
    attempt: int | None = None
    new: bool = False  # this handling created the job (a repeat of its events did not)
    batch: BatchRef | None = None  # a manifest's line: numbered as its manifest's attempt
    batch_attempt: int = 0
    opened: bool = False

    def open(self) -> int:
        """The job's item in the jobs table, and its attempt number (the same one on every repeat)."""
        if not self.opened:
            model = str((self.request or {}).get("model", ""))
            fields = {"batch_id": self.batch.batch_id, "line": self.batch.line} if self.batch else None
            self.attempt, self.new = open_attempt(
                self.job_id,
                self.source.key,
                self.sidecar_key,
                self.uploaded_at,
                self.sidecar_uploaded_at,
                model=model,
                attempt=self.batch_attempt if self.batch else None,
                fields=fields,
            )
            self.opened = True
        assert self.attempt is not None
        return self.attempt


def refuse(pending: PendingJob, code: str, message: str) -> None:
    logger.warning("Job refused at acceptance", extra={"code": code, "reason": message})
    notice = failure_notice(
        job_id=pending.job_id,
        attempt=pending.open(),
        source={"bucket": pending.source.bucket, "key": pending.source.key},
        error=NoticeError(code=code, message=message, stage="submit"),
        request=pending.request,
        tags=pending.tags,
        timings={"uploaded": pending.uploaded_at or None, "failed": iso(now())},
        batch=pending.batch,
    )
    publish_notice(notice)
