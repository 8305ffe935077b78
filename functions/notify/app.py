"""Notify Lambda: the one video.failed notice for a job whose poll or store step failed."""

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from img2video.clients import use_lambda_context
from img2video.failure import notice_for_failed_state
from img2video.jobs import ExecutionState
from img2video.observability import logger, metrics, tracer
from img2video.publisher import publish_notice


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    use_lambda_context(context)
    state = parse(event=event, model=ExecutionState)
    logger.append_keys(job_id=state.job.job_id)
    notice = notice_for_failed_state(state)
    publish_notice(notice)
    return {"notice_id": notice.notice_id}
