"""PublishNotice: the job's one notice, decided once per job id, published once, whoever asks (the state machine or the backstop)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from img2video.aws.clients import client, presigner
from img2video.aws.notify import publish_notice
from img2video.aws.s3_objects import is_missing
from img2video.core.failure import notice_for_ended_execution, notice_for_failed_state
from img2video.core.jobs import ExecutionState, Job
from img2video.core.notices import Notice, NoticeVideo, success_notice
from img2video.core.settings import get_settings
from img2video.observability import job_logging, logger, metrics

# --- what the notice says -------------------------------------------------------------------------


def notice_for_state(state: ExecutionState) -> Notice:
    """The PublishNotice state's notice: success when the video was stored, otherwise the failure that was caught."""
    if state.error is None and state.stored is not None:
        success = stored_notice(state.job)
        if success is not None:
            return success
    return notice_for_failed_state(state)


def stored_notice(job: Job) -> Notice | None:
    """The success notice of a job whose manifest is in S3 (the manifest is written after the video, so both are there)."""
    settings = get_settings()
    try:
        manifest = json.loads(client("s3").get_object(Bucket=settings.output_bucket, Key=job.manifest_key)["Body"].read())
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    if manifest.get("job_id") != job.job_id:
        return None  # another job's manifest under the same name
    video = manifest["video"]
    url = presigner().generate_presigned_url(
        "get_object", Params={"Bucket": video["bucket"], "Key": video["key"]}, ExpiresIn=settings.presign_expiry_seconds
    )
    return success_notice(
        job_id=job.job_id,
        attempt=job.attempt,
        task_id=str(manifest.get("task_id") or ""),
        source={"bucket": job.source.bucket, "key": job.source.key},
        video=NoticeVideo(bucket=video["bucket"], key=video["key"], size_bytes=int(video["size_bytes"]), sha256=video["sha256"], url=url),
        request=job.request.for_notice(),
        tags=job.request.tags,
        timings=manifest.get("timings", {}),
        batch=job.batch,
    )


def publish(event: dict[str, Any]) -> dict[str, Any]:
    """The PublishNotice state's input (the execution's state), or the backstop's EventBridge event (an execution
    ended FAILED, TIMED_OUT or ABORTED): the job's one notice either way."""
    if event.get("source") == "aws.states":
        notice = publish_for_ended_execution(event.get("detail", {}))
        return {"notice_id": notice.notice_id if notice else None}
    state = ExecutionState.model_validate(event)
    with job_logging(state.job.job_id):
        return {"notice_id": publish_for_state(state).notice_id}


def publish_for_state(state: ExecutionState) -> Notice:
    return publish_notice(notice_for_state(state))


def publish_for_ended_execution(detail: dict[str, Any]) -> Notice | None:
    """The backstop: an execution ended FAILED, TIMED_OUT or ABORTED; make sure its job has its notice.

    The outcome comes from durable facts, not from the event: a stored manifest means the video is there
    (a publish that failed after the store is a success), otherwise the way the execution ended.
    """
    raw_input = detail.get("input")
    if not raw_input:
        raw_input = client("stepfunctions").describe_execution(executionArn=detail["executionArn"]).get("input", "{}")
    try:
        job = Job.model_validate(json.loads(raw_input)["job"])
    except (ValueError, KeyError, TypeError):
        logger.error("An ended execution carries no job; nothing to notify", extra={"execution": detail.get("executionArn")})
        return None
    with job_logging(job.job_id):
        candidate = stored_notice(job) or notice_for_ended_execution(job, detail)
        decided = publish_notice(candidate)
        if decided == candidate:  # nobody had decided this job's notice: the execution ended without one
            metrics.add_metric(name="ExecutionsEndedWithoutNotice", unit=MetricUnit.Count, value=1)
            logger.warning(
                "The backstop published the notice of an execution that ended without one", extra={"status": detail.get("status")}
            )
        return decided
