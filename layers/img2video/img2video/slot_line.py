"""The line of jobs Novita turned away for want of a free task slot, woken one at a time as tasks end.

A throttled submit goes back on the SubmitQueue with exponential backoff (submit._retry_later), so no job depends on
the line; but backoff alone leaves slots idle (a slot that frees while every waiting job sleeps for minutes stays
empty) or, capped low, asks Novita again and again. So a throttled job also joins this line (an SQS queue nobody
consumes), and whoever sees a task end (a poll, a confirmed webhook) moves one waiting job to the SubmitQueue at once.

A job may then be in the SubmitQueue twice (woken, and its own retry): Submit's idempotency per job id pays once, and
the second answer finds the token used. An entry of a job that has been submitted or has ended since is dropped
without waking it. Waking is best effort: a failed or empty look leaves the jobs to their own retries.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from img2video.clients import quick_client
from img2video.observability import logger
from img2video.settings import get_settings

# Entries looked at per task end: a stale one (its job submitted since) is dropped and the next one woken.
WAKE_TRIES = 2
WAKE_CALLS_PER_TRY = 4  # ReceiveMessage, GetItem of the job, SendMessage to the SubmitQueue, DeleteMessage
_WAITING_STATES = ("accepted", "held")  # not submitted yet; a job's item is created as it is accepted


def join(body: str) -> None:
    """Put a throttled job's SubmitQueue message in the line (best effort: its own retry is already queued)."""
    settings = get_settings()
    if not settings.slot_line_queue_url:
        return
    try:
        quick_client("sqs").send_message(QueueUrl=settings.slot_line_queue_url, MessageBody=body)
    except (ClientError, BotoCoreError) as exc:
        logger.warning("Could not join the line for a task slot; the job's own retry stands", extra={"error": str(exc)})


def wake_one(dynamodb: Any = None) -> str | None:
    """A task just ended: move the first waiting job that still needs a slot to the SubmitQueue; its job id, or None.
    `dynamodb`: the caller's quick DynamoDB client, when it has one."""
    settings = get_settings()
    if not settings.slot_line_queue_url:
        return None
    sqs, dynamodb = quick_client("sqs"), dynamodb or quick_client("dynamodb")
    try:
        for _ in range(WAKE_TRIES):
            messages = sqs.receive_message(QueueUrl=settings.slot_line_queue_url, MaxNumberOfMessages=1, VisibilityTimeout=30)
            if not messages.get("Messages"):
                return None
            message = messages["Messages"][0]
            job_id = _job_id(message["Body"])
            item = dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}}).get("Item", {}) if job_id else {}
            waiting = item.get("state", {}).get("S") in _WAITING_STATES
            if waiting:
                sqs.send_message(QueueUrl=settings.submit_queue_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=settings.slot_line_queue_url, ReceiptHandle=message["ReceiptHandle"])
            if waiting:
                logger.info("A task ended; woke a job waiting for a slot", extra={"woken_job_id": job_id})
                return job_id
    except (ClientError, BotoCoreError) as exc:
        logger.warning("Could not wake a job waiting for a slot; it keeps its own retry", extra={"error": str(exc)})
    return None


def _job_id(body: str) -> str | None:
    try:
        data: Any = json.loads(body)
        job_id = data["job"]["job_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return job_id if isinstance(job_id, str) else None
