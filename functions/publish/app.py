"""Publish Lambda: the job's one notice, from the state machine's PublishNotice step or from the EventBridge backstop."""

from typing import Any

from img2video.steps.handler import entry_point
from img2video.steps.publish import publish


@entry_point(step_errors=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return publish(event)
