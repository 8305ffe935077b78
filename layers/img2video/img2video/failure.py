"""Turning a failed step (as Step Functions reports it) into the job's one failure notice."""

from __future__ import annotations

import json

from img2video.clock import iso, now
from img2video.errors import error_code
from img2video.jobs import ExecutionState, StepError
from img2video.notices import Notice, NoticeError, failure_notice

_STATES_MESSAGES = {
    "States.Timeout": "the step took longer than its time limit",
    "States.TaskFailed": "the step failed",
    "States.Runtime": "the state machine could not process the step's data",
}


def describe_error(error: StepError | None) -> tuple[str, str]:
    """(code, message) from a Catch's {"Error", "Cause"}; the Cause of a Lambda error is JSON."""
    name = error.error if error else "States.TaskFailed"
    cause = (error.cause if error else "") or ""
    message = ""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict):
            message = str(parsed.get("errorMessage") or "")
    except (TypeError, ValueError):
        message = cause
    if not message:
        message = _STATES_MESSAGES.get(name, name)
    return error_code(name), message[:1000]


def notice_for_failed_state(state: ExecutionState) -> Notice:
    job = state.job
    code, message = describe_error(state.error)
    return failure_notice(
        job_id=job.job_id,
        task_id=state.task_id,
        source={"bucket": job.source.bucket, "key": job.source.key},
        error=NoticeError(code=code, message=message, stage=state.stage),
        request=job.request.for_notice(),
        tags=job.request.tags,
        timings={"uploaded": job.uploaded_at, "submitted": state.submitted_at, "failed": iso(now()), "polls": state.poll.polls},
    )
