"""Turning a failed step (as Step Functions reports it) into the job's one failure notice."""

from __future__ import annotations

import json
from typing import Any, Literal

from img2video.clock import iso, now
from img2video.errors import error_code
from img2video.jobs import Job
from img2video.notices import Notice, NoticeError, failure_notice

Stage = Literal["submit", "poll", "store", "notify"]

_STATES_MESSAGES = {
    "States.Timeout": "the step took longer than its time limit",
    "States.TaskFailed": "the step failed",
    "States.Runtime": "the state machine could not process the step's data",
}


def describe_error(error: dict[str, Any]) -> tuple[str, str]:
    """(code, message) from a Catch's {"Error", "Cause"}; the Cause of a Lambda error is JSON."""
    name = str(error.get("Error", "States.TaskFailed"))
    cause = error.get("Cause") or ""
    message = ""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict):
            message = str(parsed.get("errorMessage") or "")
    except (TypeError, ValueError):
        message = str(cause)
    if not message:
        message = _STATES_MESSAGES.get(name, name)
    return error_code(name), message[:1000]


def notice_for_failed_state(state: dict[str, Any]) -> Notice:
    job = Job.model_validate(state["job"])
    code, message = describe_error(state.get("error") or {})
    stage: Stage = state.get("stage", "poll")
    poll = state.get("poll") or {}
    return failure_notice(
        job_id=job.job_id,
        task_id=state.get("task_id"),
        source={"bucket": job.source.bucket, "key": job.source.key},
        error=NoticeError(code=code, message=message, stage=stage),
        request=job.request.for_notice(),
        tags=job.request.tags,
        timings={
            "uploaded": job.uploaded_at,
            "submitted": state.get("submitted_at"),
            "failed": iso(now()),
            "polls": int(poll.get("polls", 0)),
        },
    )
