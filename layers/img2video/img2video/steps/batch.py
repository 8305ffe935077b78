"""Batch: a manifest's lines become jobs, each exactly as a dropped pair would (statemachine/batch.asl.json).

`read` reads the manifest once (the version Accept saw: its ETag), numbers its lines and writes them in chunks for the
batch's Distributed Map; `lines` makes each line of one chunk a job (its own validation, item, execution, or failure
notice), leaving for its next invocation what this one has not surely the time for; `refuse` gives the lines of a chunk
that could not be handled their failure notice (unless their job has its execution); `tally` records how many lines
there are, and completes the batch if every line has already ended.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from img2video.aws.batches import claim_output, set_listed
from img2video.aws.clients import AWS_CALL_WORST_SECONDS, QUICK_CALL_WORST_SECONDS, client
from img2video.aws.intake import (
    PendingJob,
    accept_job,
    end_image_key,
    etag,
    extra_image_keys,
    head,
    image_key_named,
    refuse,
    validated_image,
)
from img2video.aws.invocation import remaining_seconds
from img2video.aws.s3_objects import is_missing
from img2video.aws.transient import is_transient
from img2video.core.batch import (
    batch_output_folder,
    chunks,
    line_fields,
    line_output_name,
    manifest_folder,
    manifest_name,
    read_manifest,
)
from img2video.core.errors import InvalidManifest, InvalidSidecar, PipelineError, UnsupportedImage
from img2video.core.jobs import Job, SourceObject, job_id
from img2video.core.keys import output_key_problem, parse_input_key
from img2video.core.notices import BatchRef, NoticeError
from img2video.core.settings import Settings, get_settings
from img2video.core.sidecar import MAX_EXTRA_IMAGES, parse_sidecar
from img2video.observability import job_logging, logger

LINES_PREFIX = "img2video-batches/"  # in the output bucket: each batch's lines, in chunks, for its Distributed Map
# A line's worst case when every AWS call it makes times out: the image's HEAD and three ranged reads, the same for
# an end frame and each extra image, its item, then its execution and event, or its failure notice and its end counted
# on the batch's item (tests/unit/test_budgets.py). Another line is started only with this much time left.
LINE_WORST_SECONDS = (15 + 4 * (1 + MAX_EXTRA_IMAGES)) * AWS_CALL_WORST_SECONDS + QUICK_CALL_WORST_SECONDS


class Manifest(BaseModel):
    bucket: str
    key: str
    etag: str


class Batch(BaseModel):
    """What the batch's execution carries: which manifest, which upload of it."""

    batch_id: str
    attempt: int
    manifest: Manifest
    uploaded_at: str = ""


def batch_step(event: dict[str, Any]) -> dict[str, Any]:
    batch = Batch.model_validate(event["batch"])
    with job_logging(batch.batch_id):
        step = event["step"]
        if step == "read":
            return read(batch)
        if step == "lines":
            return {"batch": event["batch"], "lines": accept_lines(batch, event["lines"])}
        if step == "refuse":
            refuse_lines(batch, event["lines"], event.get("error") or {})
            return {}
        if step == "tally":
            return tally(batch, event.get("listed") or {}, event.get("error"))
        raise ValueError(f"unknown batch step {step!r}")


# --- read: the manifest's lines, in chunks --------------------------------------------------------------------------


def read(batch: Batch) -> dict[str, Any]:
    manifest = batch.manifest
    try:
        answer = client("s3").get_object(Bucket=manifest.bucket, Key=manifest.key, IfMatch=manifest.etag)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code in ("PreconditionFailed", "412"):
            raise InvalidManifest(
                f"{manifest.key} was replaced before its batch could read it; the newer upload is a batch of its own"
            ) from None
        if is_missing(exc):
            raise InvalidManifest(f"{manifest.key} was deleted before its batch could read it") from None
        raise
    lines = read_manifest(answer["Body"].read(), manifest.key)
    key = f"{LINES_PREFIX}{batch.batch_id}.json"
    parts = chunks(lines)
    client("s3").put_object(
        Bucket=get_settings().output_bucket,
        Key=key,
        Body=json.dumps([{"lines": part} for part in parts], ensure_ascii=False).encode(),
        ContentType="application/json",
    )
    logger.info("Read the manifest", extra={"lines": len(lines), "chunks": len(parts)})
    return {"bucket": get_settings().output_bucket, "key": key, "lines": len(lines), "chunks": len(parts)}


# --- lines: each line a job -----------------------------------------------------------------------------------------


def accept_lines(batch: Batch, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make each line a job, in order; the lines not started for lack of time are returned (the first always fits)."""
    settings = get_settings()
    for done, item in enumerate(lines):
        if done and remaining_seconds() < LINE_WORST_SECONDS:
            logger.info("Leaving lines for the next invocation", extra={"left": len(lines) - done})
            return lines[done:]
        accept_line(batch, item, settings)
    return []


def _pending(batch: Batch, number: int) -> PendingJob:
    """A line's job before anything is known of it: its id depends only on the batch and the line number."""
    manifest = batch.manifest
    name = f"{manifest_name(manifest.key)}-{number}"
    return PendingJob(
        job_id=job_id(manifest.bucket, manifest.key, manifest.etag, f"line {number}", "", name, batch.batch_id),
        source=SourceObject(bucket=manifest.bucket, key=manifest.key, etag=manifest.etag),
        uploaded_at=batch.uploaded_at,
        batch=BatchRef(batch_id=batch.batch_id, manifest={"bucket": manifest.bucket, "key": manifest.key}, line=number),
        batch_attempt=batch.attempt,
    )


def _at_line(number: int, message: str) -> str:
    return message if message.startswith(f"line {number}") else f"line {number}: {message}"


def accept_line(batch: Batch, item: dict[str, Any], settings: Settings) -> str:
    """One line: its job accepted (its execution started) or refused with its notice; what happened, for the log."""
    number = int(item["line"])
    pending = _pending(batch, number)
    with job_logging(pending.job_id):
        try:
            _accept(batch, item, pending, settings)
            outcome = "accepted"
        except PipelineError as exc:
            if exc.transient:
                raise  # the chunk is tried again (each line's job converges on the same id)
            refuse(pending, exc.code, _at_line(number, exc.message))
            outcome = "refused"
        except Exception as exc:
            if is_transient(exc):
                raise
            # whatever else one line does (a bug, an input no check foresaw) ends that line only, never its chunk
            logger.exception("A line could not be read", extra={"line": number})
            refuse(pending, "INTERNAL", f"line {number} could not be read ({type(exc).__name__})")
            outcome = "refused"
        logger.info("Handled line", extra={"line": number, "outcome": outcome})
        return outcome


def _accept(batch: Batch, item: dict[str, Any], pending: PendingJob, settings: Settings) -> None:
    number, manifest = int(item["line"]), batch.manifest
    if item.get("problem"):
        raise InvalidSidecar(str(item["problem"]))
    relative, fields = line_fields(str(item["text"]), number)
    folder = manifest_folder(manifest.key)
    image_key = image_key_named(relative, folder, settings)
    shown = json.dumps(relative, ensure_ascii=False)
    if image_key is None:
        raise InvalidSidecar(
            f'line {number}: "image" {shown} must name a .jpg, .jpeg, .png or .webp file inside {settings.input_prefix} '
            f"(relative to the manifest's folder {folder})"
        )
    found = head(manifest.bucket, image_key)
    if found is None:
        raise InvalidSidecar(f'line {number}: "image" {shown} does not exist: no object at {image_key}')
    pending.source = SourceObject(bucket=manifest.bucket, key=image_key, etag=etag(found))
    # ASCII JSON: a lone surrogate stays an escape, which the sidecar's own check names with its field
    request = parse_sidecar(json.dumps(fields).encode(), f"line {number}", settings)
    pending.request, pending.tags = request.for_notice(), request.tags
    first = validated_image(manifest.bucket, image_key, int(found["ContentLength"]), request.spec)
    end_key = end_image_key(request, first, folder, settings)
    extra_keys = extra_image_keys(request.extra_images, folder, settings, request.spec)
    image = parse_input_key(image_key, settings.input_prefix)
    assert image is not None  # an image suffix under the prefix
    base = f"{settings.output_prefix}{batch_output_folder(manifest.key, settings.input_prefix)}"
    base += line_output_name(number, image, request.output_name)
    video_key, manifest_key = f"{base}.mp4", f"{base}.json"
    problem = output_key_problem(video_key, manifest_key)
    if problem:
        raise (InvalidSidecar if request.output_name else UnsupportedImage)(f"line {number}: {problem}")
    assert pending.batch is not None
    holder = claim_output(pending.batch, video_key)
    if holder:  # before anything is paid: a second video at one key would replace the first
        raise InvalidSidecar(f'line {number}: its video {video_key} is {holder}\'s; give "output_name" a name no other line uses')
    job = Job(
        job_id=pending.job_id,
        attempt=pending.open(),
        source=pending.source,
        request=request,
        extra_image_keys=tuple(extra_keys),
        end_image_key=end_key,
        video_key=video_key,
        manifest_key=manifest_key,
        uploaded_at=pending.uploaded_at,
        batch=pending.batch,
    )
    accept_job(job, pending, settings)


# --- refuse: a chunk that could not be handled -----------------------------------------------------------------------


def refuse_lines(batch: Batch, lines: list[dict[str, Any]], error: dict[str, Any]) -> None:
    """Each line of a chunk whose handling failed on every try: its failure notice, unless its job is running."""
    reason = str(error.get("Error") or "an error")
    for item in lines:
        _refuse_unless_started(batch, int(item["line"]), f"could not be accepted ({reason})")


def _refuse_unless_started(batch: Batch, number: int, why: str) -> None:
    settings = get_settings()
    pending = _pending(batch, number)
    executions = settings.state_machine_arn.replace(":stateMachine:", ":execution:")
    try:
        client("stepfunctions").describe_execution(executionArn=f"{executions}:{pending.job_id}")
        return  # its job was accepted: its execution will send its notice
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ExecutionDoesNotExist":
            raise
    with job_logging(pending.job_id):
        refuse(pending, "INTERNAL", f"line {number}: {why}")


# --- tally: how many lines; every line without a job gets its notice; maybe the end ----------------------------------

# A swept line: is its job's execution there, and if not its item, notice and end (tests/unit/test_budgets.py).
SWEEP_LINE_WORST_SECONDS = 12 * AWS_CALL_WORST_SECONDS + QUICK_CALL_WORST_SECONDS


def tally(batch: Batch, listed: dict[str, Any], error: dict[str, Any] | None) -> dict[str, Any]:
    """The number of lines, once the Map is over; then every line that has neither ended nor a job (its chunk failed,
    or the Map did) gets its failure notice, so that every line ends in one and the batch in its own. Returns
    `more: true` when lines are left for the next invocation."""
    if error and not listed:  # the manifest could not be read: the batch's notice says why, no line is a job
        cause = str(error.get("Cause") or "")
        try:
            message = str(json.loads(cause).get("errorMessage") or cause)
        except (ValueError, AttributeError):
            message = cause
        name = str(error.get("Error") or "")
        code = "INVALID_MANIFEST" if name == "InvalidManifest" else "INTERNAL"
        set_listed(batch.batch_id, 0, NoticeError(code=code, message=message or name, stage="submit"))
        return {"lines": 0, "more": False}
    lines = int(listed.get("lines", 0))
    ended = set(set_listed(batch.batch_id, lines).get("ended", []))
    numbers = [int(item["line"]) for part in _chunks_of(listed) for item in part["lines"]]
    missing = [number for number in numbers if number not in ended]
    why = f"never became a job ({error.get('Error') or 'its chunk failed'})" if error else "never became a job (its chunk failed)"
    for done, number in enumerate(missing):
        if done and remaining_seconds() < SWEEP_LINE_WORST_SECONDS:
            return {"lines": lines, "more": True}
        _refuse_unless_started(batch, number, why)
    return {"lines": lines, "more": False}


def _chunks_of(listed: dict[str, Any]) -> list[dict[str, Any]]:
    body = client("s3").get_object(Bucket=listed["bucket"], Key=listed["key"])["Body"].read()
    chunks: list[dict[str, Any]] = json.loads(body)
    return chunks
