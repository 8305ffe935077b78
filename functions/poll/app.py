"""Poll Lambda: one look at the Novita task; returns its status and the next wait."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.aws.invocation import use_lambda_context
from img2video.aws.transient import as_step_errors
from img2video.core.jobs import ExecutionState
from img2video.observability import logger, metrics, tracer
from img2video.steps.poll import poll_task


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@as_step_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    state = ExecutionState.model_validate(event)
    logger.append_keys(job_id=state.job.job_id)
    return poll_task(state).model_dump(mode="json")
