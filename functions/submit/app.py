"""Submit Lambda: S3 events (through SQS) in, one Novita task and one execution per job out."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.clients import use_lambda_context
from img2video.observability import logger, metrics, tracer
from img2video.settings import get_settings
from img2video.submit import handle_trigger, triggers_from_body

# A batch that failed whole is reported record by record too, so each record keeps its own retry count.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    receive_count = int(record.attributes.approximate_receive_count or 1)
    for trigger in triggers_from_body(record.body):
        handle_trigger(trigger, receive_count)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    get_settings()  # a misconfigured stack fails here, loudly, before any record is touched
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
