"""PublishNotice: the job's one notice, decided once per job id, published once, whoever asks (the state machine or the backstop)."""

from __future__ import annotations

import json
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from botocore.exceptions import ClientError

from img2video.clients import client, once_per, presigner
from img2video.clock import iso, now
from img2video.failure import notice_for_ended_execution, notice_for_failed_state
from img2video.jobs import ExecutionState, Job
from img2video.jobs_table import JobState as TableState
from img2video.jobs_table import record_quietly
from img2video.notices import Notice, NoticeVideo, sns_publish_arguments, success_notice
from img2video.observability import NAMESPACE, logger, metrics
from img2video.settings import get_settings

JobState = Literal["queued", "submitted", "succeeded", "failed"]
# A tag never goes back: a late duplicate event cannot turn a finished job's image back to "queued".
_TAG_RANK = {"queued": 0, "submitted": 1, "succeeded": 2, "failed": 2}


def publish_notice(candidate: Notice) -> Notice:
    """Publish the job's notice: the first notice ever decided for this job id, whatever `candidate` says.

    Deciding and publishing are two records: once a job has a decided notice, a retry, a Catch or the
    backstop can only publish that same notice again (if its publish did not complete), never another.
    """
    decided = _decide(candidate)
    _record_outcome(decided)  # the jobs table has the final state before any subscriber hears of it
    _publish_once(decided)
    state: JobState = "succeeded" if decided.error is None else "failed"
    tag_source(decided.source["bucket"], decided.source["key"], state, decided.job_id)
    return decided


def _record_outcome(notice: Notice) -> None:
    error = notice.error
    outcome: TableState = "succeeded" if error is None else "cancelled" if error.code == "CANCELLED" else "failed"
    record_quietly(
        notice.job_id,
        outcome,
        notice_id=notice.notice_id,
        task_id=notice.task_id,
        error_code=error.code if error else None,
        error_message=error.message if error else None,
        error_stage=error.stage if error else None,
        video_key=notice.video.key if notice.video else None,
        ended_at=iso(now()),
    )


def _decide(candidate: Notice) -> Notice:
    @once_per("job_id", purpose="img2video-notice-decision", argument="notice")
    def decide(notice: dict[str, Any]) -> dict[str, Any]:
        return notice

    return Notice.model_validate(decide(notice=candidate.model_dump(mode="json")))


def _publish_once(notice: Notice) -> None:
    @once_per("notice_id", purpose="img2video-notice", argument="notice")
    def publish(notice: dict[str, Any]) -> dict[str, str]:
        parsed = Notice.model_validate(notice)
        answer = client("sns").publish(**sns_publish_arguments(parsed, get_settings().topic_arn))
        logger.info("Published notice", extra={"notice_id": parsed.notice_id, "event": parsed.event})
        if parsed.error is not None:
            metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
            # by error code too, as a dimension of its own metric (the shared set has only the service dimension)
            with single_metric(name="JobsFailedByCode", unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as by_code:
                by_code.add_dimension(name="error_code", value=parsed.error.code)
        else:
            metrics.add_metric(name="JobsSucceeded", unit=MetricUnit.Count, value=1)
        return {"message_id": str(answer["MessageId"])}

    publish(notice=notice.model_dump(mode="json"))


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
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
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
    )


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
    logger.append_keys(job_id=job.job_id)
    candidate = stored_notice(job) or notice_for_ended_execution(job, detail)
    decided = publish_notice(candidate)
    if decided == candidate:  # nobody had decided this job's notice: the execution ended without one
        metrics.add_metric(name="ExecutionsEndedWithoutNotice", unit=MetricUnit.Count, value=1)
        logger.warning("The backstop published the notice of an execution that ended without one", extra={"status": detail.get("status")})
    return decided


# --- the image's tag ------------------------------------------------------------------------------


def tag_source(bucket: str, key: str, state: JobState, job_id: str) -> None:
    """Record the job's state on the image, keeping the user's own tags. Best effort: never fails a job."""
    try:
        s3 = client("s3")
        existing = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        current = {tag["Key"]: tag["Value"] for tag in existing}
        if current.get("img2video-job") == job_id and _TAG_RANK.get(current.get("img2video-status", ""), -1) >= _TAG_RANK[state]:
            return  # already there or further along: a late duplicate never takes a job back
        kept = [tag for tag in existing if not tag["Key"].startswith("img2video-")]
        if len(kept) > 8:  # S3 allows 10 tags; the user's own win
            logger.info("Source image has too many tags to add the job state", extra={"key": key})
            return
        tags = [*kept, {"Key": "img2video-status", "Value": state}, {"Key": "img2video-job", "Value": job_id}]
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tags})
    except Exception as exc:  # a tag is a courtesy: no AWS fault here may turn into a second notice
        logger.warning("Could not tag the source image", extra={"key": key, "error": type(exc).__name__})
