"""The line of jobs waiting for a free task slot at Novita, woken one at a time as tasks end.

A job Novita turns away for want of a slot (429) goes back on the SubmitQueue with exponential backoff
(submit._retry_later): that retry is the job's own, and no job depends on the line. But backoff alone leaves slots idle
(a slot that frees while every waiting job sleeps for minutes stays empty), and every retry that asks Novita while the
slots are full is a 429 and a Submit invocation other jobs wait behind. So a throttled job also joins this line (an
SQS queue nobody consumes), and whoever sees a task end (a poll, a confirmed webhook) moves the first job still waiting
to the SubmitQueue at once, marked `woken`, which asks Novita whoever else waits.

Each look is written down (`#slot-line` in the jobs table). While the line moves (a look woke a job within the line's
patience), a job not in line yet joins it without asking Novita, and a job in line asks only when its own retry comes,
once per patience rather than on its backoff: that retry still finds a slot that freed unseen (a wake lost, a task that
nobody polls any more), so a line that stops or loses a wake costs a job at most one patience. Once the line stops
(nobody woken for a patience, or the last look found nobody waiting), retries back off as usual: a job Novita turned
away for a passing rate limit, with no line to speak of, asks again within seconds.

A job may be in the SubmitQueue twice (woken, and its own retry): Submit's idempotency per job id pays once, and the
second answer finds the token used. Entries of jobs that were submitted or ended since are dropped as they are seen.
Waking is best effort with quick clients: a failed look leaves the jobs to their own retries.
"""

from __future__ import annotations

import json
import math
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from img2video.aws.clients import quick_client
from img2video.aws.task_item import set_fields, task_key
from img2video.core.clock import now
from img2video.core.line import whom_to_wake
from img2video.core.settings import Settings, get_settings
from img2video.observability import logger

LOOK_AT = 10  # entries looked at per task end (one ReceiveMessage): the stale ones among them are dropped
# SQS's short poll samples a subset of its servers and, for a queue holding few messages, often answers with none while
# entries wait: a task end that believed an empty line left its freed slot to the jobs' backoff (up to 900 s). So an
# empty short poll is checked against the queue's count, and a line that holds entries is looked at again with a long
# poll, which asks every server and answers as soon as one has an entry. A line that is truly empty costs no wait: a
# poll that sees its task end returns at once (tests/unit/test_budgets.py counts the long poll's second all the same).
LINE_WAIT_SECONDS = 1
# UpdateItem of the task's item (its slot freed, once), ReceiveMessage (short, then GetQueueAttributes and a long one
# when it came back empty), BatchGetItem of their jobs, SendMessage of the one woken, DeleteMessageBatch (woken and
# stale), ChangeMessageVisibilityBatch (the others back in line at once), UpdateItem of the line's last look
WAKE_CALLS = 9
# The line's patience: a line whose last look woke a job within this long is moving, and a job in it asks Novita this
# often. Long enough to span the gaps between task ends of a busy account (tasks of minutes over a few slots), short
# enough that a line nobody wakes delays its jobs by minutes at most. Never longer than a throttled submit's backoff
# cap (SubmitRetryMaxSeconds; local mode's tests shorten it to seconds).
LINE_MOVING_SECONDS = 300
_WAITING_STATES = ("accepted", "held")  # not submitted yet; a job's item is created as it is accepted
_LINE_ITEM = "#slot-line"  # the line's last look; a job id never starts with "#"


def join(body: str) -> bool:
    """Put a job's SubmitQueue message in the line (best effort: its own retry is already queued); whether it did."""
    settings = get_settings()
    if not settings.slot_line_queue_url:
        return False
    try:
        quick_client("sqs").send_message(QueueUrl=settings.slot_line_queue_url, MessageBody=body)
    except (ClientError, BotoCoreError) as exc:
        logger.warning("Could not join the line for a task slot; the job's own retry stands", extra={"error": str(exc)})
        return False
    return True


def patience(settings: Settings) -> int:
    return min(LINE_MOVING_SECONDS, settings.submit_retry_max_seconds)


def is_moving() -> bool:
    """Whether the line's last look, within its patience, found a job waiting and woke it."""
    settings = get_settings()
    if not settings.slot_line_queue_url:
        return False
    try:
        item = (
            quick_client("dynamodb")
            .get_item(TableName=settings.jobs_table, Key={"job_id": {"S": _LINE_ITEM}}, ConsistentRead=True)
            .get("Item", {})
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("Could not read the line for a task slot; asking Novita", extra={"error": str(exc)})
        return False
    looked_at = float(item.get("looked_at", {}).get("N", "0"))
    return bool(item.get("waiting", {}).get("BOOL")) and now() - looked_at < patience(settings)


def task_ended(task_id: str, dynamodb: Any = None) -> str | None:
    """A task's end was seen (by a poll, or a confirmed webhook: often both): its slot is free, and whoever saw it
    first wakes one job for it, so one slot never wakes two. The woken job's id, or None."""
    settings = get_settings()
    if not settings.slot_line_queue_url:
        return None
    dynamodb = dynamodb or quick_client("dynamodb")
    try:
        dynamodb.update_item(
            TableName=settings.jobs_table,
            Key=task_key(task_id),
            ConditionExpression="attribute_not_exists(slot_freed)",
            **set_fields({"slot_freed": {"BOOL": True}}),
        )
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return None  # the other one saw it first and woke a job for this slot
        logger.warning("Could not mark the task's slot as freed; waking a job all the same", extra={"error": str(exc)})
    return wake_one(dynamodb)


def wake_one(dynamodb: Any = None) -> str | None:
    """A task just ended: move the first waiting job that still needs a slot to the SubmitQueue; its job id, or None.
    `dynamodb`: the caller's quick DynamoDB client, when it has one."""
    settings = get_settings()
    if not settings.slot_line_queue_url:
        return None
    sqs, dynamodb = quick_client("sqs", waits=LINE_WAIT_SECONDS), dynamodb or quick_client("dynamodb")
    line = settings.slot_line_queue_url
    try:
        messages = _look(sqs, line)
        job_ids = [_job_id(m["Body"]) for m in messages]
        look = whom_to_wake(job_ids, _waiting_jobs(dynamodb, settings.jobs_table, {j for j in job_ids if j}))
        woken_id = job_ids[look.woken] if look.woken is not None else None
        if look.woken is not None:
            sqs.send_message(QueueUrl=settings.submit_queue_url, MessageBody=_as_woken(messages[look.woken]["Body"]))
        if look.leave:
            sqs.delete_message_batch(QueueUrl=line, Entries=[_entry(i, messages[index]) for i, index in enumerate(look.leave)])
        if look.back:
            sqs.change_message_visibility_batch(
                QueueUrl=line, Entries=[{**_entry(i, messages[index]), "VisibilityTimeout": 0} for i, index in enumerate(look.back)]
            )
        _note_look(dynamodb, settings.jobs_table, look.woken is not None)
    except (ClientError, BotoCoreError) as exc:
        logger.warning("Could not wake a job waiting for a slot; it keeps its own retry", extra={"error": str(exc)})
        return None
    if woken_id is not None:
        logger.info("A task ended; woke a job waiting for a slot", extra={"woken_job_id": woken_id})
    return woken_id


def _look(sqs: Any, line: str) -> list[dict[str, Any]]:
    """The entries at the head of the line: a short poll, and if it saw none while the queue counts some, a long one."""
    look = {"QueueUrl": line, "MaxNumberOfMessages": LOOK_AT, "VisibilityTimeout": 30}
    messages: list[dict[str, Any]] = sqs.receive_message(**look).get("Messages", [])
    if messages:
        return messages
    counts = sqs.get_queue_attributes(QueueUrl=line, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    if not int(counts.get("ApproximateNumberOfMessages", 0)):
        return []
    found: list[dict[str, Any]] = sqs.receive_message(**look, WaitTimeSeconds=LINE_WAIT_SECONDS).get("Messages", [])
    return found


def _waiting_jobs(dynamodb: Any, table: str, job_ids: set[str]) -> set[str]:
    """Which of these jobs still wait to be submitted (a key DynamoDB left unprocessed counts as not waiting, this time)."""
    if not job_ids:
        return set()
    answer = dynamodb.batch_get_item(
        RequestItems={
            table: {
                "Keys": [{"job_id": {"S": j}} for j in sorted(job_ids)],
                "ProjectionExpression": "job_id, #s",
                "ExpressionAttributeNames": {"#s": "state"},
            }
        }
    )
    return {item["job_id"]["S"] for item in answer.get("Responses", {}).get(table, []) if item.get("state", {}).get("S") in _WAITING_STATES}


def _note_look(dynamodb: Any, table: str, woke: bool) -> None:
    at = now()
    dynamodb.update_item(
        TableName=table,
        Key={"job_id": {"S": _LINE_ITEM}},
        UpdateExpression="SET looked_at = :at, waiting = :woke, expires_at = :expires",
        ExpressionAttributeValues={":at": {"N": f"{at:.3f}"}, ":woke": {"BOOL": woke}, ":expires": {"N": str(math.ceil(at) + 86400)}},
    )


def _entry(index: int, message: dict[str, Any]) -> dict[str, Any]:
    return {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}


def _as_woken(body: str) -> str:
    data = json.loads(body)
    data["woken"] = True
    return json.dumps(data)


def _job_id(body: str) -> str | None:
    try:
        data: Any = json.loads(body)
        job_id = data["job"]["job_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return job_id if isinstance(job_id, str) else None
