"""Submit Lambda: one SubmitQueue message (sent by the job's execution with its task token) in, one paid Novita task out.

The SubmitQueue's event source mapping hands over one record per invocation (BatchSize 1, so a slow POST never
starves another record of its time). A partial-batch processor would have nothing to be partial about, and importing
Powertools' batch utility (asyncio and every event data class) would cost this handler about 45 ms of each cold
start (bench/import_time.py). So the handler answers `batchItemFailures` itself: a record whose handling raised is
reported failed, and SQS delivers it again, without the invocation counting as a function error.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.aws.invocation import use_lambda_context
from img2video.core.settings import get_settings
from img2video.observability import logger, metrics, tracer
from img2video.steps.submit import SubmitRequest, handle_submit


def record_handler(record: dict[str, Any]) -> None:
    request = SubmitRequest.model_validate_json(record["body"])
    logger.append_keys(job_id=request.job.job_id)
    try:
        handle_submit(request, int(record.get("attributes", {}).get("ApproximateReceiveCount") or 1))
    finally:
        logger.remove_keys(["job_id"])


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    get_settings()  # a misconfigured stack fails here, loudly, before any record is touched
    failures = []
    for record in event["Records"]:
        try:
            record_handler(record)
        except Exception:
            logger.exception("Submit failed; SQS delivers the message again", extra={"message_id": record["messageId"]})
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
