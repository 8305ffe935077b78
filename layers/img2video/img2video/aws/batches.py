"""A batch's item in the jobs table: its lines counted as their jobs end, and its one completion notice.

The item (`#batch#<batch id>`) is created when the manifest is accepted, numbered as the next attempt of the
manifest's key. Each line's end is counted once whatever repeats (its line number joins a set, on condition it is not
in it yet); when the count reaches the number of lines, the `batch.completed` notice is published once per batch.
Both the last line's notice and the end of the batch's listing look, so whichever comes second completes it.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from img2video.aws.clients import client
from img2video.aws.idempotency import sent_once
from img2video.aws.job_events import batch_ended
from img2video.aws.jobs_table import BATCH_PREFIX, JOB_TTL_SECONDS, Opened, numbered, plain
from img2video.core.batch import OUTCOMES, BatchNotice, Outcome, batch_notice, batch_publish_arguments
from img2video.core.clock import iso, now
from img2video.core.notices import BatchRef, NoticeError
from img2video.core.settings import get_settings
from img2video.observability import logger

_OUTPUT_PREFIX = "#output#"  # a video key a batch line has claimed: two lines never write one video


def _table() -> str:
    return get_settings().jobs_table


def _key(batch_id: str) -> dict[str, dict[str, str]]:
    return {"job_id": {"S": BATCH_PREFIX + batch_id}}


def open_batch(batch_id: str, bucket: str, manifest_key: str, uploaded_at: str) -> Opened:
    """The batch's item, numbered as the next attempt of its manifest's key (the same number on every repeat)."""
    stamp = iso(now())
    item = {
        "job_id": {"S": BATCH_PREFIX + batch_id},
        "batch_id": {"S": batch_id},
        "manifest_bucket": {"S": bucket},
        "manifest_key": {"S": manifest_key},
        "uploaded_at": {"S": uploaded_at},
        "created_at": {"S": stamp},
        "expires_at": {"N": str(int(now() + JOB_TTL_SECONDS))},
    }
    return numbered(item, manifest_key, {"latest_batch": batch_id})


def claim_output(batch: BatchRef, video_key: str) -> str | None:
    """Claim a video key for a line, before its job is paid: None when the line may write it (free, its own, or an
    earlier upload's of the same manifest), else which line of which manifest holds it."""
    manifest_key = batch.manifest["key"]
    try:
        client("dynamodb").put_item(
            TableName=_table(),
            Item={
                "job_id": {"S": _OUTPUT_PREFIX + video_key},
                "batch_id": {"S": batch.batch_id},
                "manifest_key": {"S": manifest_key},
                "line": {"N": str(batch.line)},
                "expires_at": {"N": str(int(now() + JOB_TTL_SECONDS))},
            },
            ConditionExpression="attribute_not_exists(job_id) OR (manifest_key = :m AND (batch_id <> :b OR #line = :l))",
            ExpressionAttributeNames={"#line": "line"},
            ExpressionAttributeValues={":m": {"S": manifest_key}, ":b": {"S": batch.batch_id}, ":l": {"N": str(batch.line)}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",  # who holds it, in the refusal: one call either way
        )
        return None
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        item = exc.response.get("Item") or {}
    holder = item.get("manifest_key", {}).get("S", "another manifest")
    line = item.get("line", {}).get("N", "?")
    return f"line {line}" if holder == manifest_key else f"line {line} of {holder}"


def get_batch(batch_id: str) -> dict[str, Any] | None:
    return _plain_batch(client("dynamodb").get_item(TableName=_table(), Key=_key(batch_id), ConsistentRead=True).get("Item"))


def _plain_batch(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if not item:
        return None
    item = dict(item)
    sets: dict[str, list[int]] = {name: sorted(int(n) for n in item.pop(name)["NS"]) for name in ("ended", "failed_lines") if name in item}
    return {**plain(item), **sets}


def line_ended(batch: BatchRef, outcome: Outcome) -> None:
    """Count the line's end once (a repeat finds its number in the set and changes nothing), then complete the batch
    if it was the last."""
    names = {"#o": f"{outcome}_count"}
    values = {":line": {"NS": [str(batch.line)]}, ":n": {"N": str(batch.line)}, ":one": {"N": "1"}}
    update = "ADD ended :line, ended_count :one, #o :one"
    if outcome == "failed":
        update += ", failed_lines :line"
    try:
        answer = client("dynamodb").update_item(
            TableName=_table(),
            Key=_key(batch.batch_id),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(job_id) AND NOT contains(ended, :n)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            # the item as it now is, counted or (a repeat) refused: one call, no read after it
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        item = answer.get("Attributes")
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        item = exc.response.get("Item")
    complete_if_done(batch.batch_id, _plain_batch(item))


def set_listed(batch_id: str, lines: int, error: NoticeError | None = None) -> dict[str, Any]:
    """The number of lines is known (the listing is over), or the manifest could not be read at all: the batch's item
    as it now is (one call, no read after it), its notice published if every line has already ended."""
    values: dict[str, Any] = {":lines": {"N": str(lines)}, ":at": {"S": iso(now())}}
    update = "SET #lines = :lines, listed_at = :at"
    if error is not None:
        update += ", error_code = :code, error_message = :message"
        values.update({":code": {"S": error.code}, ":message": {"S": error.message}})
    answer = client("dynamodb").update_item(
        TableName=_table(),
        Key=_key(batch_id),
        UpdateExpression=update,
        ExpressionAttributeNames={"#lines": "lines"},
        ExpressionAttributeValues=values,
        ReturnValues="ALL_NEW",
    )
    batch = _plain_batch(answer.get("Attributes")) or {}
    complete_if_done(batch_id, batch)
    return batch


def complete_if_done(batch_id: str, batch: dict[str, Any] | None = None) -> BatchNotice | None:
    """Publish the batch's notice (once per batch) if its lines are known and every one has ended (`batch`: the item
    as just written, else read)."""
    batch = batch or get_batch(batch_id)
    if batch is None or "lines" not in batch or int(batch.get("ended_count", 0)) < int(batch["lines"]):
        return None
    error = NoticeError(code=batch["error_code"], message=batch["error_message"], stage="submit") if "error_code" in batch else None
    notice = batch_notice(
        batch_id=batch_id,
        attempt=int(batch.get("attempt", 1)),
        manifest={"bucket": batch["manifest_bucket"], "key": batch["manifest_key"]},
        lines=int(batch["lines"]),
        counts={outcome: int(batch.get(f"{outcome}_count", 0)) for outcome in OUTCOMES},
        failed_lines=list(batch.get("failed_lines", [])),
        error=error,
        timings={"uploaded": batch.get("uploaded_at"), "accepted": batch.get("created_at"), "completed": iso(now())},
    )
    if _publish_once(notice):
        batch_ended(notice)
    client("dynamodb").update_item(
        TableName=_table(),
        Key=_key(batch_id),
        UpdateExpression="SET completed_at = if_not_exists(completed_at, :at)",
        ExpressionAttributeValues={":at": {"S": iso(now())}},
    )
    return notice


def _publish_once(notice: BatchNotice) -> bool:
    def publish(notice: dict[str, Any]) -> dict[str, str]:
        parsed = BatchNotice.model_validate(notice)
        answer = client("sns").publish(**batch_publish_arguments(parsed, get_settings().topic_arn))
        logger.info("Published batch notice", extra={"notice_id": parsed.notice_id, "lines": parsed.lines, "counts": parsed.counts})
        return {"message_id": str(answer["MessageId"])}

    return sent_once("img2video-batch-notice", notice.model_dump(mode="json"), publish)
