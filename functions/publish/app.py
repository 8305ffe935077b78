"""Publish Lambda: the job's one notice, from the state machine's PublishNotice step or from the EventBridge backstop."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.aws.invocation import use_lambda_context
from img2video.aws.transient import as_step_errors
from img2video.core.jobs import ExecutionState
from img2video.observability import logger, metrics, tracer
from img2video.steps.publish import publish_for_ended_execution, publish_for_state


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@as_step_errors
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_lambda_context(context)
    if event.get("source") == "aws.states":  # EventBridge: an execution ended FAILED, TIMED_OUT or ABORTED
        notice = publish_for_ended_execution(event.get("detail", {}))
        return {"notice_id": notice.notice_id if notice else None}
    state = ExecutionState.model_validate(event)
    logger.append_keys(job_id=state.job.job_id)
    return {"notice_id": publish_for_state(state).notice_id}
