"""Publishing a notice at most once per notice_id, and marking the source image with the job's state."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from botocore.exceptions import ClientError

from img2video.clients import client, once_per
from img2video.notices import Notice, sns_publish_arguments
from img2video.observability import NAMESPACE, logger, metrics
from img2video.settings import get_settings

JobState = Literal["queued", "submitted", "succeeded", "failed"]


def publish_notice(notice: Notice) -> str:
    """Publish once: a retried step finds the first publish's record and sends nothing."""

    @once_per("notice_id", purpose="img2video-notice", argument="notice")
    def _publish(notice: dict[str, Any]) -> dict[str, str]:
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
        return {"message_id": answer["MessageId"]}

    result = _publish(notice=notice.model_dump(mode="json"))
    tag_source(notice.source["bucket"], notice.source["key"], "succeeded" if notice.error is None else "failed", notice.job_id)
    return str(result["message_id"])


def tag_source(bucket: str, key: str, state: JobState, job_id: str) -> None:
    """Record the job's state on the image, keeping the user's own tags. Best effort: never fails a job."""
    s3 = client("s3")
    try:
        existing = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        kept = [tag for tag in existing if not tag["Key"].startswith("img2video-")]
        if len(kept) > 8:  # S3 allows 10 tags; the user's own win
            logger.info("Source image has too many tags to add the job state", extra={"key": key})
            return
        tags = [*kept, {"Key": "img2video-status", "Value": state}, {"Key": "img2video-job", "Value": job_id}]
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tags})
    except ClientError as exc:
        logger.warning("Could not tag the source image", extra={"key": key, "error": exc.response["Error"]["Code"]})
