"""Submit Lambda: one SubmitQueue message (sent by the job's execution with its task token) in, one paid Novita task out."""

from typing import Any

from img2video.steps.handler import entry_point
from img2video.steps.submit import submit_batch


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return submit_batch(event)
