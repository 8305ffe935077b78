"""Webhook Lambda, behind a Function URL: Novita's ASYNC_TASK_RESULT, confirmed with the Task Result API, ends the job's wait."""

from typing import Any

from img2video.steps.handler import entry_point
from img2video.steps.webhook import handle_webhook


@entry_point(log_event=False)  # the event's path holds the URL's secret: it is never logged
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle_webhook(event)
