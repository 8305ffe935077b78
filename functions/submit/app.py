"""Submit Lambda: one SubmitQueue message (sent by the job's execution with its task token) in, one paid Novita task out."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.clients import use_lambda_context
from img2video.observability import logger, metrics, tracer
from img2video.settings import get_settings
from img2video.submit import SubmitRequest, handle_submit

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    request = SubmitRequest.model_validate_json(record.body)
    logger.append_keys(job_id=request.job.job_id)
    try:
        handle_submit(request, int(record.attributes.approximate_receive_count or 1))
    finally:
        logger.remove_keys(["job_id"])


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    get_settings()
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
