"""The jobs table: one item per job, written by every step, so "what is running", "what failed since
yesterday" and "what happened to incoming/a/cat.jpg" are one query each (docs/design.md, section 6).

Items never go back: each write names the state it records, and a state further along (a finished job, a
later poll) is never overwritten by a late or repeated step. Besides the jobs, the table holds one small
counter item per source key (how many attempts it has had), one per daily-limit window, and one per kind of job
(model, resolution, duration, off-peak) with the generation times of the last 128 such jobs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from img2video.aws.clients import client
from img2video.aws.transient import cancellation_reasons, is_transient
from img2video.core.clock import iso, now
from img2video.core.errors import AwsTransient
from img2video.core.settings import get_settings
from img2video.observability import logger, metrics

JobState = Literal["accepted", "held", "submitted", "running", "storing", "succeeded", "failed", "cancelled"]
STATES: tuple[JobState, ...] = ("accepted", "held", "submitted", "running", "storing", "succeeded", "failed", "cancelled")
_RANK: dict[str, int] = {"accepted": 0, "held": 1, "submitted": 2, "running": 3, "storing": 4, "succeeded": 9, "failed": 9, "cancelled": 9}
TERMINAL_RANK = 9
BY_STATE_INDEX = "by-state"  # state, updated_at: what is running, what failed since a time
BY_SOURCE_INDEX = "by-source"  # source_key, created_at: every attempt of one image, newest first
JOB_TTL_SECONDS = 90 * 24 * 3600
ATTEMPTS_PREFIX = "#attempts#"  # counter items; a job id never starts with "#"
BATCH_PREFIX = "#batch#"  # a batch manifest's item: its lines counted as they end (aws/batches.py)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(int(value)) if float(value).is_integer() else repr(float(value))}


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return _n(value)
    return _s(str(value))


def _table() -> str:
    return get_settings().jobs_table


def get_job(job_id: str) -> dict[str, Any] | None:
    """The job's item as plain Python values (strongly consistent), or None."""
    item = client("dynamodb").get_item(TableName=_table(), Key={"job_id": _s(job_id)}, ConsistentRead=True).get("Item")
    return plain(item) if item else None


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item's typed attributes as plain values (the few types this table uses)."""
    out: dict[str, Any] = {}
    for name, typed in item.items():
        ((kind, raw),) = typed.items()
        out[name] = float(raw) if kind == "N" and not raw.lstrip("-").isdigit() else int(raw) if kind == "N" else raw
    return out


class Opened(NamedTuple):
    attempt: int
    new: bool  # this call created the job's item; a repeat (a re-delivered event, the sidecar's event) did not


def open_attempt(
    job_id: str,
    source_key: str,
    sidecar_key: str,
    uploaded_at: str,
    sidecar_uploaded_at: str = "",
    model: str = "",
    *,
    attempt: int | None = None,
    fields: dict[str, Any] | None = None,
) -> Opened:
    """Create the job's item, numbered as the next attempt for its source key; a repeat returns the same number.

    One transaction puts the job (only if new) and moves the source key's counter (only from the value read),
    so two uploads racing for the same key never get the same number and a re-delivered event never a new one.
    At most three calls: the one that loses a race is told to look again later (AwsTransient).
    A job whose number is already known (a batch line: its manifest's attempt) is one conditional put.
    """
    stamp = iso(now())
    item = {
        "job_id": _s(job_id),
        "source_key": _s(source_key),
        "state": _s("accepted"),
        "rank": _n(_RANK["accepted"]),
        "created_at": _s(stamp),
        "updated_at": _s(stamp),
        "accepted_at": _s(stamp),
        "expires_at": _n(now() + JOB_TTL_SECONDS),
    }
    if sidecar_key:
        item["sidecar_key"] = _s(sidecar_key)
    if uploaded_at:
        item["uploaded_at"] = _s(uploaded_at)
    if sidecar_uploaded_at:
        item["sidecar_uploaded_at"] = _s(sidecar_uploaded_at)
    if model:  # the model the sidecar chose; a job refused before its sidecar was read has none
        item["model"] = _s(model)
    item.update({name: _value(value) for name, value in (fields or {}).items()})
    if attempt is not None:
        return _put_numbered(item, attempt)
    return numbered(item, source_key)


def _put_numbered(item: dict[str, Any], attempt: int) -> Opened:
    try:
        client("dynamodb").put_item(
            TableName=_table(), Item={**item, "attempt": _n(attempt)}, ConditionExpression="attribute_not_exists(job_id)"
        )
        return Opened(attempt, new=True)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
    return Opened(attempt, new=False)


def numbered(item: dict[str, Any], counted_key: str, counter_fields: dict[str, Any] | None = None) -> Opened:
    """Put `item` (only if new) numbered as the next attempt of `counted_key`, in one transaction with its counter."""
    dynamodb = client("dynamodb")
    counter_key = {"job_id": _s(ATTEMPTS_PREFIX + counted_key)}
    counter = dynamodb.get_item(TableName=_table(), Key=counter_key, ConsistentRead=True).get("Item")
    previous = int(counter["attempts"]["N"]) if counter else 0
    extra = {f":{name}": _value(value) for name, value in (counter_fields or {}).items()}
    try:
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": {**item, "attempt": _n(previous + 1)},
                        "ConditionExpression": "attribute_not_exists(job_id)",
                    }
                },
                {
                    "Update": {
                        "TableName": _table(),
                        "Key": counter_key,
                        "UpdateExpression": "SET attempts = :next, expires_at = :expires"
                        + "".join(f", {name[1:]} = {name}" for name in extra),
                        "ConditionExpression": "attempts = :previous" if counter else "attribute_not_exists(job_id)",
                        "ExpressionAttributeValues": {
                            ":next": _n(previous + 1),
                            ":expires": _n(now() + JOB_TTL_SECONDS),
                            **({":previous": _n(previous)} if counter else {}),
                            **extra,
                        },
                    }
                },
            ]
        )
        return Opened(previous + 1, new=True)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "TransactionCanceledException":
            raise
    existing = client("dynamodb").get_item(TableName=_table(), Key={"job_id": item["job_id"]}, ConsistentRead=True).get("Item")
    if existing and "attempt" in existing:
        return Opened(int(existing["attempt"]["N"]), new=False)  # this upload was seen before: its number stays
    raise AwsTransient(f"another upload of {counted_key} took attempt number {previous + 1} at the same moment")


OPEN_ATTEMPT_CALLS = 3  # the counter, the transaction, and the job's item when the transaction was refused


def latest_attempt(source_key: str) -> dict[str, Any] | None:
    """The newest job of this image key (the by-source index), or None."""
    items = client("dynamodb").query(
        TableName=_table(),
        IndexName=BY_SOURCE_INDEX,
        KeyConditionExpression="source_key = :key",
        ExpressionAttributeValues={":key": _s(source_key)},
        ScanIndexForward=False,
        Limit=1,
    )["Items"]
    return plain(items[0]) if items else None


def record(job_id: str, state: JobState, **fields: Any) -> bool:
    """Write the job's state and fields, unless the item is already further along; False when it was.

    Fields whose value is None are left as they are. A step's write is progress, not the job's outcome:
    callers that can go on without it use `record_quietly`.
    """
    rank = _RANK[state]
    names = {"#state": "state", "#rank": "rank"}
    values: dict[str, Any] = {":state": _s(state), ":rank": _n(rank), ":now": _s(iso(now())), ":expires": _n(now() + JOB_TTL_SECONDS)}
    sets = ["#state = :state", "#rank = :rank", "updated_at = :now", "expires_at = :expires"]
    for index, (name, value) in enumerate(sorted(fields.items())):
        if value is None:
            continue
        names[f"#f{index}"], values[f":f{index}"] = name, _value(value)
        sets.append(f"#f{index} = :f{index}")
    if rank == TERMINAL_RANK:  # a finished job keeps its outcome; the same outcome may be written again
        condition = "attribute_not_exists(#rank) OR #rank < :rank OR #state = :state"
    else:
        condition = "attribute_not_exists(#rank) OR #rank <= :rank"
    try:
        client("dynamodb").update_item(
            TableName=_table(),
            Key={"job_id": _s(job_id)},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def record_quietly(job_id: str, state: JobState, **fields: Any) -> None:
    """`record`, for a step whose work must not depend on the table: a failed write is logged, never raised."""
    try:
        record(job_id, state, **fields)
    except Exception as exc:  # the table is the user's view of the job; the job itself goes on
        logger.warning("Could not record the job's state", extra={"state": state, "error": type(exc).__name__})
        metrics.add_metric(name="JobsTableWriteFailed", unit=MetricUnit.Count, value=1)


_QUOTA_PREFIX = "#quota#"  # one counter item per daily-limit window


def claim_submission(job_id: str, limit: int, window_seconds: int) -> float | None:
    """Count the job against the current window's limit, once per job: None when it may be submitted now,
    otherwise the epoch second at which the next window opens.

    The job's claim and the window's count move in one transaction, conditional on the count being under the
    limit, so concurrent Submit functions can never take the window past it, and a retried submit (the same job
    counted already) goes on without counting again.
    """
    window = int(now() // window_seconds)
    dynamodb = client("dynamodb")
    try:
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": _table(),
                        "Key": {"job_id": _s(job_id)},
                        "UpdateExpression": "SET quota_window = :window",
                        "ConditionExpression": "attribute_not_exists(quota_window)",
                        "ExpressionAttributeValues": {":window": _n(window)},
                    }
                },
                {
                    "Update": {
                        "TableName": _table(),
                        "Key": {"job_id": _s(f"{_QUOTA_PREFIX}{window}")},
                        "UpdateExpression": "ADD submissions :one SET expires_at = :expires",
                        "ConditionExpression": "attribute_not_exists(submissions) OR submissions < :limit",
                        "ExpressionAttributeValues": {":one": _n(1), ":limit": _n(limit), ":expires": _n(now() + JOB_TTL_SECONDS)},
                    }
                },
            ]
        )
        return None
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "TransactionCanceledException":
            raise
        # DynamoDB also cancels for a conflicting transaction or throttling: those are tried again (Submit's transient
        # retry), never read as the limit; only the window's own condition failing means the window is full
        job_reason, window_reason = [*cancellation_reasons(exc), "None", "None"][:2]  # the job's claim, the window
        if is_transient(exc) or "ConditionalCheckFailed" not in (job_reason, window_reason):
            raise
    item = get_job(job_id)  # the reasons alone are not trusted to tell "counted already" from "full" (moto's are not exact)
    if item and "quota_window" in item:
        return None  # counted by an earlier try of this same submit
    return float((window + 1) * window_seconds)


# -- generation times of earlier jobs, by kind: what the wait policy plans the polls of a job without hints from --

HISTORY_SLOTS = 128  # a ring: each job writes one slot (by its id), so the item stays small and needs no trimming


def _slot(job_id: str) -> str:
    return str(int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % HISTORY_SLOTS)


def _set_slots(key: str, job_id: str, values: dict[str, dict[str, str]], dynamodb: Any = None) -> None:
    """Put this job's entry in each of the kind's maps named by `values` (samples, asked, arrivals): one update, or
    three when a map does not exist yet (a kind's first job, or the first that asked for a webhook)."""
    dynamodb, slot = dynamodb or client("dynamodb"), _slot(job_id)
    item: dict[str, Any] = {"TableName": _table(), "Key": {"job_id": _s(key)}}
    maps = {f"#{name}": name for name in values}
    update = {
        "UpdateExpression": "SET " + ", ".join(f"#{name}.#slot = :{name}" for name in values),
        "ExpressionAttributeNames": {"#slot": slot, **maps},
        "ExpressionAttributeValues": {f":{name}": value for name, value in values.items()},
    }
    try:
        dynamodb.update_item(**item, **update)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ValidationException":  # a map to put the slot in is missing
            raise
        dynamodb.update_item(
            **item,
            UpdateExpression="SET " + ", ".join(f"{name} = if_not_exists({name}, :empty)" for name in maps),
            ExpressionAttributeNames=maps,
            ExpressionAttributeValues={":empty": {"M": {}}},
        )
        dynamodb.update_item(**item, **update)


def record_generation_time(key: str, job_id: str, seconds: float, webhook: Literal["arrived", "asked"] | None = None) -> None:
    """Keep how long this job's task took among the last HISTORY_SLOTS of its kind and, when it asked Novita for a
    webhook, that it did (and that the webhook has arrived, when it has by now). Best effort, like every progress write."""
    values = {"samples": _n(round(seconds, 1))}
    if webhook is not None:
        values["asked"] = _s(job_id)
    if webhook == "arrived":
        values["arrivals"] = _s(job_id)
    try:
        _set_slots(key, job_id, values)
    except Exception as exc:  # the history only makes later jobs' polls smarter; this job is done either way
        logger.warning("Could not record the generation time", extra={"error": type(exc).__name__})


def record_webhook_arrival(key: str, job_id: str, dynamodb: Any = None) -> None:
    """Keep that this job's webhook came, whenever it came: after the job was stored, too (a poll saw the task done
    first). Best effort; `dynamodb` is the caller's client (the Webhook function's fails fast)."""
    try:
        _set_slots(key, job_id, {"arrivals": _s(job_id)}, dynamodb)
    except Exception as exc:  # only later jobs' trust in webhooks depends on it
        logger.warning("Could not record the webhook's arrival", extra={"error": type(exc).__name__})


@dataclass(frozen=True)
class KindHistory:
    """What the last jobs of one kind tell about the next: their generation times, and for those that asked Novita for
    a webhook, whether it came."""

    samples: list[float] = field(default_factory=list)
    webhook_arrivals: list[bool] = field(default_factory=list)


def kind_history(key: str) -> KindHistory:
    """The history kept for this kind of job (empty when there is none, or the table did not answer)."""
    try:
        item = client("dynamodb").get_item(TableName=_table(), Key={"job_id": _s(key)}).get("Item") or {}
    except Exception as exc:  # without history the first poll comes after PollMinSeconds, as always
        logger.warning("Could not read the generation times", extra={"error": type(exc).__name__})
        return KindHistory()
    samples = item.get("samples", {}).get("M", {})
    asked = item.get("asked", {}).get("M", {})
    arrivals = item.get("arrivals", {}).get("M", {})
    # a slot's arrival counts for the job that holds the slot now (a ring slot is reused by later jobs of the kind)
    came = [arrivals.get(slot, {}).get("S") == job["S"] for slot, job in asked.items()]
    return KindHistory([float(value["N"]) for value in samples.values()], came)
