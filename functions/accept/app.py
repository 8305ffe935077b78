"""Accept Lambda: S3 events (through the UploadQueue) in, one validated job and its execution out; nothing is paid here."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.aws.invocation import remaining_seconds, use_lambda_context
from img2video.core.settings import get_settings
from img2video.observability import logger, metrics, tracer
from img2video.steps.accept import ACCEPT_RECORD_WORST_SECONDS, handle_trigger, triggers_from_body

# A batch that failed whole is reported record by record too, so each record keeps its own retry count.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


started: list[str] = []  # the records this invocation has started


def record_handler(record: SQSRecord) -> None:
    receive_count = int(record.attributes.approximate_receive_count or 1)
    if started and remaining_seconds() < ACCEPT_RECORD_WORST_SECONDS and receive_count < get_settings().max_receive_count:
        # never start another record that might not finish before the timeout (the first always fits):
        # it comes back with the next delivery
        raise TimeoutError("not enough time left in this invocation for another upload")
    started.append(record.message_id)
    for trigger in triggers_from_body(record.body):
        handle_trigger(trigger, receive_count)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    started.clear()
    get_settings()  # a misconfigured stack fails here, loudly, before any record is touched
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
