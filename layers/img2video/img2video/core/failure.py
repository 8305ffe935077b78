"""Turning a failed step, or an execution that ended badly, into the job's one failure notice."""

from __future__ import annotations

import json
from typing import Any

from img2video.core.clock import iso, now
from img2video.core.errors import error_code
from img2video.core.jobs import ExecutionState, Job, Stage, StepError
from img2video.core.notices import Notice, NoticeError, failure_notice

_STATES_MESSAGES = {
    "States.Timeout": "the step took longer than its time limit",
    "States.TaskFailed": "the step failed",
    "States.Runtime": "the state machine could not process the step's data",
    "States.DataLimitExceeded": "the job's data grew past Step Functions' 256 KiB limit",
    "Lambda.Unknown": "the function timed out or ran out of memory on every try",
    "Sandbox.Timedout": "the function timed out on every try",
    "Runtime.OutOfMemory": "the function ran out of memory on every try",
}
# Errors whose meaning depends on the step they ended: waiting for the submit is waiting for Novita.
_BY_STAGE = {
    ("submit", "States.Timeout"): ("PROVIDER_FAILED", "Novita stayed busy and did not accept the job within the submit window"),
}


def describe_error(error: StepError | None, stage: Stage = "poll") -> tuple[str, str]:
    """(code, message) from a Catch's {"Error", "Cause"}; the Cause of a Lambda error is JSON."""
    name = error.error if error else "States.TaskFailed"
    if (stage, name) in _BY_STAGE:
        return _BY_STAGE[(stage, name)]
    cause = (error.cause if error else "") or ""
    message = ""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict):
            message = str(parsed.get("errorMessage") or "")
    except (TypeError, ValueError):
        message = cause
    if not message or name in ("Lambda.Unknown", "Sandbox.Timedout", "Runtime.OutOfMemory"):
        message = _STATES_MESSAGES.get(name, name)  # Lambda's own timeout text names a request id, nothing a user can use
    return error_code(name), message[:1000]


def notice_for_failed_state(state: ExecutionState) -> Notice:
    job = state.job
    code, message = describe_error(state.error, state.stage)
    submitted = state.submitted
    return failure_notice(
        job_id=job.job_id,
        attempt=job.attempt,
        task_id=state.task_id,
        source={"bucket": job.source.bucket, "key": job.source.key},
        error=NoticeError(code=code, message=message, stage=state.stage),
        request=job.request.for_notice(),
        tags=job.request.tags,
        batch=job.batch,
        timings={
            "uploaded": job.uploaded_at,
            "accepted": state.accepted_at,
            "submitted": submitted.submitted_at if submitted else None,
            "failed": iso(now()),
            "polls": state.poll.polls,
        },
    )


def notice_for_ended_execution(job: Job, detail: dict[str, Any]) -> Notice:
    """The backstop's failure notice, from EventBridge's "Step Functions Execution Status Change" detail."""
    status = str(detail.get("status", "FAILED"))
    if status == "ABORTED":
        code, message = "CANCELLED", "the job was stopped before it finished (its execution was stopped)"
    elif status == "TIMED_OUT":
        code, message = "INTERNAL", "the job's execution ran past its time limit"
    else:
        error = StepError.model_validate({"Error": detail.get("error") or "States.TaskFailed", "Cause": detail.get("cause") or ""})
        code, message = describe_error(error, "notify")
        message = f"the job's execution failed before its notice was sent: {message}"
    return failure_notice(
        job_id=job.job_id,
        attempt=job.attempt,
        source={"bucket": job.source.bucket, "key": job.source.key},
        error=NoticeError(code=code, message=message, stage="notify"),
        request=job.request.for_notice(),
        tags=job.request.tags,
        batch=job.batch,
        timings={"uploaded": job.uploaded_at, "failed": iso(now())},
    )
