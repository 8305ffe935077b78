"""Answering an execution's task token: the one place that tells a wait that ended from a call that failed."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from img2video.observability import logger

# Step Functions' answers when the execution no longer waits for this token: it timed out, was stopped, ended, or
# took another answer already. Nothing is lost: whoever ended the wait saw to the job.
_GONE = ("TaskDoesNotExist", "TaskTimedOut", "InvalidToken", "ExecutionDoesNotExist")


def step_error_cause(error: str, message: str) -> str:
    """A task failure's cause as a Lambda error's would read: the state machine's Catch parses it the same way."""
    return json.dumps({"errorType": error, "errorMessage": message})


def answer_task(sfn: Any, token: str, *, output: str | None = None, error: str | None = None, message: str = "") -> bool:
    """SendTaskSuccess with `output`, or SendTaskFailure with `error` and `message`; False when nobody waits any more."""
    try:
        if error is None:
            sfn.send_task_success(taskToken=token, output=output)
        else:
            sfn.send_task_failure(taskToken=token, error=error, cause=step_error_cause(error, message))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code not in _GONE:
            raise
        logger.info("The execution no longer waits for this answer", extra={"error": code})
        return False
    return True
