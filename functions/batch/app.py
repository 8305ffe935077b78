"""Batch Lambda: the steps of a batch's execution (statemachine/batch.asl.json): read a manifest, make its lines jobs."""

from typing import Any

from img2video.steps.batch import batch_step
from img2video.steps.handler import entry_point


@entry_point(step_errors=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return batch_step(event)
