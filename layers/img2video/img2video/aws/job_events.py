"""Job events on EventBridge: every state change of a job as one "Video Job State Change" event.

The stack's EventBusName names the bus (empty: no events). Intermediate states (accepted, held, submitted, running,
storing) are best effort: one quick PutEvents, and a failure is logged, never raised, so an event never delays or
fails a job. The terminal event (succeeded, failed, cancelled) is decided with the notice and carries its content and
`notice_id`; it is put last, after the notice, and a failure is raised, so the Publish step's retries (and the
backstop) deliver it as they deliver the notice. A retry after it was put (the function died before answering) puts
it again: the same `notice_id`, as EventBridge's own at-least-once delivery may repeat any event.

`order` rises with every change of one image's jobs: attempt, then state, then progress. A consumer keeps the event
with the highest `order` it has seen per `source`, and drops a late, older one. EventBridge delivers at least once:
the same `order` twice is the same change.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit

from img2video.aws.clients import quick_client
from img2video.core.clock import iso, now
from img2video.core.errors import AwsTransient
from img2video.core.jobs import Job
from img2video.core.notices import Notice
from img2video.core.settings import get_settings
from img2video.observability import logger, metrics

SOURCE = "img2video"  # never aws.*: only AWS services may use those
DETAIL_TYPE = "Video Job State Change"
DETAIL_VERSION = "1"

State = Literal["accepted", "held", "submitted", "running", "storing", "succeeded", "failed", "cancelled"]
_RANK: dict[str, int] = {"accepted": 1, "held": 2, "submitted": 3, "running": 4, "storing": 5, "succeeded": 9, "failed": 9, "cancelled": 9}


def order_of(attempt: int, state: State, progress: float = 0) -> int:
    """A number that grows with every change of one image's jobs: a later attempt, a later state, more progress."""
    return attempt * 1_000_000 + _RANK[state] * 1_000 + max(0, min(100, int(progress)))


def job_changed(job: Job, state: State, progress: float | None = None, **details: Any) -> None:
    """An intermediate state of a job: one event, best effort (a failure is logged and counted, never raised)."""
    bus = get_settings().event_bus_name
    if not bus:
        return
    detail = {
        "version": DETAIL_VERSION,
        "job_id": job.job_id,
        "attempt": job.attempt,
        "state": state,
        "order": order_of(job.attempt, state, progress or 0),
        "source": {"bucket": job.source.bucket, "key": job.source.key},
        "request": job.request.for_notice(),
        "progress_percent": progress,
        "tags": job.request.tags,
        "changed_at": iso(now()),
        **{name: value for name, value in details.items() if value is not None},
    }
    try:
        _put(quick_client("events"), bus, detail)
    except Exception as exc:  # an event is news about the job, never part of it
        logger.warning("Could not put the job's event", extra={"state": state, "error": type(exc).__name__})
        metrics.add_metric(name="JobEventsFailed", unit=MetricUnit.Count, value=1)


def job_ended(notice: Notice) -> None:
    """The terminal event: the notice's content; a failure is raised, so the step tries again."""
    bus = get_settings().event_bus_name
    if not bus:
        return

    error = notice.error
    state: State = "succeeded" if error is None else "cancelled" if error.code == "CANCELLED" else "failed"
    detail = {
        "version": DETAIL_VERSION,
        "state": state,
        "order": order_of(notice.attempt, state, 100 if error is None else 0),
        "progress_percent": 100 if error is None else None,
        **notice.model_dump(mode="json", exclude={"version"}),
        "notice_version": notice.version,
        "changed_at": iso(now()),
    }
    _put(quick_client("events"), bus, detail)  # quick: the step's own retries (and the backstop's) try again


def _put(events: Any, bus: str, detail: dict[str, Any]) -> str:
    """One PutEvents entry; EventBridge answers a refused entry in the body, not as an error: that is raised too."""
    answer = events.put_events(
        Entries=[{"Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": json.dumps(detail, ensure_ascii=False), "EventBusName": bus}]
    )
    [entry] = answer.get("Entries") or [{}]
    if answer.get("FailedEntryCount") or "EventId" not in entry:
        raise AwsTransient(f"EventBridge refused the job's event: {entry.get('ErrorCode', 'no event id')} {entry.get('ErrorMessage', '')}")
    return str(entry["EventId"])
