"""Store: fetch a fresh video URL, stream the video to S3, write its manifest, publish the success notice."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from img2video.clients import client, once_per
from img2video.clock import iso, now, parse_iso
from img2video.errors import DownloadInterrupted
from img2video.jobs import ExecutionState
from img2video.notices import NoticeVideo, success_notice
from img2video.novita import NovitaClient, TaskStatus, load_api_key
from img2video.observability import logger, metrics
from img2video.publisher import publish_notice
from img2video.settings import get_settings
from img2video.video_transfer import stream_video_to_s3


def store_video(state: dict[str, Any]) -> dict[str, Any]:
    """Run once per job: a retry after a completed store returns the first result and publishes nothing."""

    @once_per("job.job_id", purpose="img2video-store", argument="state")
    def _store(state: dict[str, Any]) -> dict[str, Any]:
        return _store_once(state)

    result: dict[str, Any] = _store(state=state)
    return result


def _store_once(data: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    state = ExecutionState.model_validate(data)
    job, task_id = state.job, state.task_id
    novita = NovitaClient(settings.novita_base_url, load_api_key(settings.novita_secret_id))
    # Always ask for the result again: the URL seen by the poll may have expired since.
    result = novita.task_result(task_id)
    if result.task.task_status is not TaskStatus.SUCCEED or not result.videos:
        raise DownloadInterrupted(f"the task {task_id} reports no video to download (status {result.task.status})")
    video = result.videos[0]

    stored = stream_video_to_s3(
        video.video_url,
        settings.output_bucket,
        job.video_key,
        metadata={"job-id": job.job_id, "task-id": task_id},
        allow_loopback_http=settings.allow_loopback_http,
    )
    stored_at = now()
    timings = {
        "uploaded": job.uploaded_at,
        "submitted": state.submitted_at,
        "finished": state.poll.finished_at,
        "stored": iso(stored_at),
        "polls": state.poll.polls,
    }
    manifest = {
        "job_id": job.job_id,
        "task_id": task_id,
        "model": job.request.model,
        "request": {
            **job.request.provider_body(
                [f"s3://{job.source.bucket}/{job.source.key}"] + [f"s3://{job.source.bucket}/{k}" for k in job.extra_image_keys]
            ),
            "model": job.request.model,
        },
        "source": {"bucket": job.source.bucket, "key": job.source.key, "etag": job.source.etag},
        "sidecar": job.sidecar.model_dump() if job.sidecar else None,
        "video": {"bucket": settings.output_bucket, "key": job.video_key, "size_bytes": stored.size_bytes, "sha256": stored.sha256},
        "provider_seed": result.extra.get("seed"),
        "tags": job.request.tags,
        "timings": timings,
    }
    client("s3").put_object(
        Bucket=settings.output_bucket,
        Key=job.manifest_key,
        Body=json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"),
        ContentType="application/json",
        Metadata={"job-id": job.job_id, "task-id": task_id},
    )
    if timings["submitted"] and timings["finished"]:
        generation = parse_iso(str(timings["finished"])) - parse_iso(str(timings["submitted"]))
        metrics.add_metric(name="GenerationSeconds", unit=MetricUnit.Seconds, value=round(generation, 3))
    url = client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": settings.output_bucket, "Key": job.video_key}, ExpiresIn=settings.presign_expiry_seconds
    )
    notice = success_notice(
        job_id=job.job_id,
        task_id=task_id,
        source={"bucket": job.source.bucket, "key": job.source.key},
        video=NoticeVideo(bucket=settings.output_bucket, key=job.video_key, size_bytes=stored.size_bytes, sha256=stored.sha256, url=url),
        request=job.request.for_notice(),
        tags=job.request.tags,
        timings=timings,
    )
    publish_notice(notice)
    logger.info("Stored video", extra={"key": job.video_key, "size_bytes": stored.size_bytes})
    return {"video_key": job.video_key, "manifest_key": job.manifest_key, "size_bytes": stored.size_bytes, "sha256": stored.sha256}
