"""Store: stream the finished video to S3 and write its manifest; resumable, so a retry never fetches a stored video again."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from img2video.aws.clients import client, transfer_client
from img2video.aws.job_events import job_changed
from img2video.aws.jobs_table import record_generation_time, record_quietly
from img2video.aws.s3_objects import is_missing
from img2video.aws.secrets import novita_client
from img2video.aws.task_item import take_notes
from img2video.aws.video_transfer import CHUNK_SIZE, stream_video_to_s3
from img2video.core.clock import iso, now, parse_iso
from img2video.core.errors import DownloadInterrupted
from img2video.core.jobs import ExecutionState, Stored
from img2video.core.settings import get_settings
from img2video.core.storing import StoredVideo, is_this_jobs_video, vouched_by_manifest
from img2video.novita.models import TaskStatus
from img2video.observability import logger, metrics


def store_video(state: ExecutionState) -> Stored:
    """Put the video and its manifest in S3. Each part is skipped when a previous attempt already finished it."""
    settings = get_settings()
    job, task_id = state.job, state.task_id or ""
    job_changed(job, "storing", progress=100, task_id=task_id or None)
    stored, written = _already_stored(settings.output_bucket, job.video_key, job.manifest_key, job.job_id, task_id)
    if stored is not None and written is not None:  # both parts done by an earlier try: nothing to redo
        logger.info("Video and manifest already stored by an earlier attempt", extra={"key": job.video_key})
        return Stored(
            video_key=job.video_key,
            manifest_key=job.manifest_key,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            stored_at=str(written.get("timings", {}).get("stored") or ""),
        )
    notes = take_notes(task_id)
    provider_seed: Any = notes.seed
    generation = notes.generation_seconds  # by Novita's clock, when it says
    if stored is None:
        if notes.video_url:  # as the poll or the webhook that saw the task done read it: no second Task Result call
            video_url = notes.video_url
        else:  # none kept, or it was tried once and failed: ask Novita for a fresh one
            result = novita_client(settings.novita_base_url, settings.novita_secret_id).task_result(task_id)
            if result.task.task_status is not TaskStatus.SUCCEED or not result.videos:
                raise DownloadInterrupted(f"the task {task_id} reports no video to download (status {result.task.status})")
            video_url, provider_seed, generation = result.videos[0].video_url, result.extra.get("seed"), result.generation_seconds
        stored = stream_video_to_s3(
            video_url,
            settings.output_bucket,
            job.video_key,
            metadata={"job-id": job.job_id, "task-id": task_id},
            allow_loopback_http=settings.allow_loopback_http,
            max_bytes=settings.max_video_bytes,
        )
    else:
        logger.info("Video already stored by an earlier attempt; not fetching it again", extra={"key": job.video_key})
    manifest = _manifest(state, stored, provider_seed)
    client("s3").put_object(
        Bucket=settings.output_bucket,
        Key=job.manifest_key,
        Body=json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"),
        ContentType="application/json",
        Metadata={"job-id": job.job_id, "task-id": task_id},
    )
    timings = manifest["timings"]
    if generation is None and timings["submitted"] and timings["finished"]:  # as the poll or webhook that saw it done
        generation = parse_iso(str(timings["finished"])) - parse_iso(str(timings["submitted"]))
    if generation is not None:
        metrics.add_metric(name="GenerationSeconds", unit=MetricUnit.Seconds, value=round(generation, 3))
        # later jobs of this kind plan their polls from it (wait_policy), and whether its webhook came: they wait for
        # their webhooks only while they arrive
        asked = state.submitted is not None and state.submitted.webhook_expires_at is not None
        came = notes.webhook_arrived or state.poll.detected_by == "webhook"
        record_generation_time(job.history_key, job.job_id, generation, ("arrived" if came else "asked") if asked else None)
    logger.info("Stored video", extra={"key": job.video_key, "size_bytes": stored.size_bytes})
    record_quietly(job.job_id, "storing", video_key=job.video_key, size_bytes=stored.size_bytes, stored_at=timings["stored"])
    return Stored(
        video_key=job.video_key,
        manifest_key=job.manifest_key,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        stored_at=timings["stored"],
    )


def _already_stored(
    bucket: str, video_key: str, manifest_key: str, job_id: str, task_id: str
) -> tuple[StoredVideo | None, dict[str, Any] | None]:
    """The video this job already put in S3 (a completed multipart upload is all or nothing), with its size and hash,
    and its manifest when that was written too."""
    s3 = client("s3")
    try:
        head = s3.head_object(Bucket=bucket, Key=video_key)
    except ClientError as exc:
        if is_missing(exc):
            return None, None
        raise
    if not is_this_jobs_video(head.get("Metadata", {}), job_id, task_id):
        return None, None  # an older job's video under the same name: this job's replaces it
    size = int(head["ContentLength"])
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        vouched = vouched_by_manifest(manifest, job_id, size)
        if vouched is not None:
            return vouched, manifest
    except ClientError as exc:
        if not is_missing(exc):
            raise
    # Stored, but the manifest was not written: hash what S3 holds (in-region), never the provider again.
    digest = hashlib.sha256()
    body = transfer_client().get_object(Bucket=bucket, Key=video_key)["Body"]
    for chunk in iter(lambda: body.read(CHUNK_SIZE), b""):
        digest.update(chunk)
    return StoredVideo(size_bytes=size, sha256=digest.hexdigest()), None


def _manifest(state: ExecutionState, stored: StoredVideo, provider_seed: Any) -> dict[str, Any]:
    settings = get_settings()
    job = state.job
    submitted = state.submitted
    return {
        "job_id": job.job_id,
        "attempt": job.attempt,
        "task_id": state.task_id,
        "model": job.request.model,
        "request": {
            **job.request.provider_body(
                f"s3://{job.source.bucket}/{job.source.key}",
                f"s3://{job.source.bucket}/{job.end_image_key}" if job.end_image_key else None,
                tuple(f"s3://{job.source.bucket}/{k}" for k in job.extra_image_keys),
            ),
            "model": job.request.model,
        },
        "source": {"bucket": job.source.bucket, "key": job.source.key, "etag": job.source.etag},
        "sidecar": job.sidecar.model_dump() if job.sidecar else None,
        "video": {"bucket": settings.output_bucket, "key": job.video_key, "size_bytes": stored.size_bytes, "sha256": stored.sha256},
        "provider_seed": provider_seed,
        "tags": job.request.tags,
        "timings": {
            "uploaded": job.uploaded_at,
            "accepted": state.accepted_at,
            "submitted": submitted.submitted_at if submitted else None,
            "finished": state.poll.finished_at,
            "stored": iso(now()),
            "polls": state.poll.polls,
        },
    }
