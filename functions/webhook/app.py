"""Webhook Lambda, behind a Function URL: Novita's ASYNC_TASK_RESULT, confirmed with the Task Result API, ends the job's wait."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.aws.invocation import use_lambda_context
from img2video.observability import logger, metrics, tracer
from img2video.steps.webhook import handle_webhook


@logger.inject_lambda_context(log_event=False)  # the event's path holds the URL's secret: it is never logged
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    return handle_webhook(event)
