"""The one wrapping of every Lambda entry point: the six `functions/*/app.py` are each a few lines over these.

`entry_point` gives each invocation the Powertools logging context, metrics flushed at its end, tracing when the stack
turns it on, the Lambda context (idempotency records expire with it), and the stack's settings checked before any
work, so a misconfigured stack fails loudly at once. `state_step` adds what a state machine task needs: its input
parsed as the execution's state (a malformed one fails before any work), the job id on every log line, and AWS's
passing faults raised as `AwsTransient`, the error every Retry lists. `sqs_records` answers an SQS batch record by
record (ReportBatchItemFailures): one record that fails never fails the others.

Powertools' batch utility would do what `sqs_records` does, but importing it (asyncio and every event data class) costs
about 45 ms of each cold start (bench/import_time.py), for a loop of ten lines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from img2video.aws.invocation import use_lambda_context
from img2video.aws.transient import as_step_errors
from img2video.core.jobs import ExecutionState
from img2video.core.settings import get_settings
from img2video.observability import job_logging, logger, metrics, tracer

Event = dict[str, Any]
Handler = Callable[[Event, Any], Any]


def entry_point(*, log_event: bool | None = None, step_errors: bool = False) -> Callable[[Handler], Handler]:
    """Wrap a Lambda handler; `log_event=False` keeps the event out of the logs whatever POWERTOOLS_LOGGER_LOG_EVENT says
    (the Webhook's path holds a secret), `step_errors` maps AWS's passing faults to AwsTransient for the state machine's Retry."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(event: Event, context: Any) -> Any:
            use_lambda_context(context)
            get_settings()  # a misconfigured stack fails here, loudly, before any work (cached after the first call)
            return handler(event, context)

        inner = as_step_errors(run) if step_errors else run
        return logger.inject_lambda_context(log_event=log_event)(tracer.capture_lambda_handler(metrics.log_metrics(inner)))  # type: ignore[no-any-return]

    return wrap


def state_step(step: Callable[[ExecutionState], BaseModel]) -> Handler:
    """A state machine task whose input is the execution's state and whose output is the model `step` returns."""

    @entry_point(step_errors=True)
    def handler(event: Event, context: Any) -> Event:
        state = ExecutionState.model_validate(event)
        with job_logging(state.job.job_id):
            return step(state).model_dump(mode="json")

    return handler


class NotNow(Exception):
    """A record left for SQS to deliver again, on purpose (not a failure: logged as such, without a traceback)."""


def sqs_records(event: Event, handle: Callable[[Event], None], step: str) -> Event:
    """Handle each SQS record in turn; report those that raised, so that SQS delivers only them again."""
    failures = []
    for record in event["Records"]:
        try:
            handle(record)
        except NotNow as reason:
            logger.info(f"{step} left a message for its next delivery: {reason}", extra={"message_id": record["messageId"]})
            failures.append({"itemIdentifier": record["messageId"]})
        except Exception:
            logger.exception(f"{step} failed; SQS delivers the message again", extra={"message_id": record["messageId"]})
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def receive_count(record: Event) -> int:
    """How many times SQS has delivered this record, this delivery included."""
    return int(record.get("attributes", {}).get("ApproximateReceiveCount") or 1)
