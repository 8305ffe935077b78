"""Store Lambda: stream the finished video to S3 and write its manifest (resuming whatever an earlier try finished)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.aws.invocation import use_lambda_context
from img2video.aws.transient import as_step_errors
from img2video.core.jobs import ExecutionState
from img2video.observability import logger, metrics, tracer
from img2video.steps.store import store_video


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@as_step_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    state = ExecutionState.model_validate(event)  # a malformed input fails here, before any download
    logger.append_keys(job_id=state.job.job_id)
    return store_video(state).model_dump(mode="json")
