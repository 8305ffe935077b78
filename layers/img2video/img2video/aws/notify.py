"""The job's one notice: decided once per job id, recorded in the jobs table, published once on SNS, tagged on the image.

Accept (a bad upload's failure) and Publish (every other outcome) both end a job here.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from img2video.aws.batches import line_ended
from img2video.aws.clients import client
from img2video.aws.idempotency import once_per, sent_once
from img2video.aws.job_events import job_ended
from img2video.aws.jobs_table import JobState as TableState
from img2video.aws.jobs_table import record_quietly
from img2video.aws.s3_objects import SourceState, tag_source
from img2video.core.clock import iso, now
from img2video.core.notices import Notice, sns_publish_arguments
from img2video.core.settings import get_settings
from img2video.observability import NAMESPACE, logger, metrics


def publish_notice(candidate: Notice) -> Notice:
    """Publish the job's notice: the first notice ever decided for this job id, whatever `candidate` says.

    Deciding and publishing are two records: once a job has a decided notice, a retry, a Catch or the
    backstop can only publish that same notice again (if its publish did not complete), never another.
    """
    decided = _decide(candidate)
    _record_outcome(decided)  # the jobs table has the final state before any subscriber hears of it
    published = _publish_once(decided)
    state: SourceState = "succeeded" if decided.error is None else "failed"
    tag_source(decided.source["bucket"], decided.source["key"], state, decided.job_id)
    if published:  # the terminal event, once per job: by the call that sent the notice, never by a repeat
        job_ended(decided)
    if decided.batch is not None:  # counted once per line whatever repeats; the last one completes its batch
        error = decided.error
        line_ended(decided.batch, "succeeded" if error is None else "cancelled" if error.code == "CANCELLED" else "failed")
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


def _publish_once(notice: Notice) -> bool:
    """Publish the notice once per notice id; True when this call published it (not a repeat)."""

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

    return sent_once("img2video-notice", notice.model_dump(mode="json"), publish)
