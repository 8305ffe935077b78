"""Job events on EventBridge: every state change of a job as one "Video Job State Change" event.

The stack's EventBusName names the bus (empty: no events). Every event is news about a job, never part of it: one
quick PutEvents, and a failure (a missing bus, a refusal, a fault) is logged and counted (`JobEventsFailed`), never
raised, so an event can neither delay nor fail a job. The terminal event (succeeded, failed, cancelled) is put by
the call that published the job's notice, right after it, with the notice's content and `notice_id`: one per job,
however many deliveries found the job's end (an image's and its sidecar's events both finding a bad pair).

`order` rises with every change of one image's jobs: its upload time (a later upload is a later job, whatever its
attempt number), then attempt, state and progress. A consumer keeps the event with the highest `order` it has seen
per `source`, and drops a late, older one. EventBridge delivers at least once: the same `order` twice is the same
change.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit

from img2video.aws.clients import quick_client
from img2video.core.batch import BatchNotice
from img2video.core.clock import iso, now, parse_iso
from img2video.core.errors import AwsTransient
from img2video.core.jobs import Job
from img2video.core.notices import Notice
from img2video.core.settings import get_settings
from img2video.observability import logger, metrics

SOURCE = "img2video"  # never aws.*: only AWS services may use those
DETAIL_TYPE = "Video Job State Change"
BATCH_DETAIL_TYPE = "Video Batch State Change"
DETAIL_VERSION = "1"

State = Literal["accepted", "held", "submitted", "running", "storing", "succeeded", "failed", "cancelled"]
_RANK: dict[str, int] = {"accepted": 1, "held": 2, "submitted": 3, "running": 4, "storing": 5, "succeeded": 9, "failed": 9, "cancelled": 9}


def order_of(uploaded_at: str, attempt: int, state: State, progress: float | None = 0) -> int:
    """A number that grows with every change of one image's jobs: a later upload (S3's LastModified, whole seconds),
    then a later attempt, state, more progress. Below 2**53, so JavaScript consumers read it exactly."""
    uploaded = int(parse_iso(uploaded_at, 0.0)) if uploaded_at else 0
    return uploaded * 100_000 + (attempt % 10) * 10_000 + _RANK[state] * 1_000 + _percent(progress)


def _percent(progress: float | None) -> int:
    """Novita's progress as a whole percent: a NaN or an infinity (its numbers arrive as strings) counts as none."""
    return int(max(0.0, min(100.0, progress))) if progress is not None and math.isfinite(progress) else 0


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such a number is left out of an event rather than make it unsendable."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def job_changed(job: Job, state: State, progress: float | None = None, **details: Any) -> None:
    """An intermediate state of a job: one event, best effort."""
    bus = get_settings().event_bus_name
    if not bus:
        return
    try:
        detail = {
            "version": DETAIL_VERSION,
            "job_id": job.job_id,
            "attempt": job.attempt,
            "state": state,
            "order": order_of(job.uploaded_at, job.attempt, state, progress),
            "source": {"bucket": job.source.bucket, "key": job.source.key},
            "request": job.request.for_notice(),
            "progress_percent": _finite(progress),
            "tags": job.request.tags,
            **({"batch": job.batch.model_dump(mode="json")} if job.batch else {}),
            "changed_at": iso(now()),
            **{name: _finite(value) for name, value in details.items() if _finite(value) is not None},
        }
        _put(quick_client("events"), bus, detail)
    except Exception as exc:  # an event is news about the job, never part of it
        _failed(state, exc)


def job_ended(notice: Notice) -> None:
    """The terminal event: the notice's content. Called once per job, by the call that published its notice."""
    bus = get_settings().event_bus_name
    if not bus:
        return
    error = notice.error
    state: State = "succeeded" if error is None else "cancelled" if error.code == "CANCELLED" else "failed"
    try:
        detail = {
            "version": DETAIL_VERSION,
            "state": state,
            "order": order_of(str(notice.timings.get("uploaded") or ""), notice.attempt, state, 100 if error is None else 0),
            "progress_percent": 100 if error is None else None,
            **notice.model_dump(mode="json", exclude={"version"}),
            "notice_version": notice.version,
            "changed_at": iso(now()),
        }
        _put(quick_client("events"), bus, detail)
    except Exception as exc:  # the notice is out; its event must not undo that (a missing bus, a refusal)
        _failed(state, exc)


def batch_ended(notice: BatchNotice) -> None:
    """A batch's one "completed" event, with its notice's content: put by the call that published that notice."""
    bus = get_settings().event_bus_name
    if not bus:
        return
    try:
        detail = {"version": DETAIL_VERSION, "state": "completed", **notice.model_dump(mode="json", exclude={"version"})}
        _put(quick_client("events"), bus, {**detail, "notice_version": notice.version, "changed_at": iso(now())}, BATCH_DETAIL_TYPE)
    except Exception as exc:
        _failed("batch.completed", exc)


def _failed(state: str, exc: Exception) -> None:
    logger.warning("Could not put the job's event", extra={"state": state, "error": type(exc).__name__})
    metrics.add_metric(name="JobEventsFailed", unit=MetricUnit.Count, value=1)


def _put(events: Any, bus: str, detail: dict[str, Any], detail_type: str = DETAIL_TYPE) -> str:
    """One PutEvents entry; EventBridge answers a refused entry in the body, not as an error: that is raised too."""
    answer = events.put_events(
        Entries=[{"Source": SOURCE, "DetailType": detail_type, "Detail": json.dumps(detail, ensure_ascii=False), "EventBusName": bus}]
    )
    [entry] = answer.get("Entries") or [{}]
    if answer.get("FailedEntryCount") or "EventId" not in entry:
        raise AwsTransient(f"EventBridge refused the job's event: {entry.get('ErrorCode', 'no event id')} {entry.get('ErrorMessage', '')}")
    return str(entry["EventId"])
