"""The webhook fast path (docs/design.md, section 4): Novita's ASYNC_TASK_RESULT ends a job's wait as soon as it is confirmed.

The webhook is not signed, so its body is never trusted: it only names a task, whose status is then read from the
Task Result API. An unguessable path segment (a secret generated at deploy) keeps strangers out: a call without it is
a 404. A replayed or duplicated webhook, or one racing a poll, changes nothing, because the task's item in the jobs
table records the confirmed outcome once (a conditional write) and the execution's wait token is used once.

The execution's side of the handshake is in the state machine: each wait for the next poll is a callback task that
stores its token on the task's item (`#task#<task_id>`), refused once a confirmed outcome is there (the poll then runs
at once). A webhook that arrives before the execution waits, or while it polls, leaves the outcome for it that way.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from img2video.aws import slot_line
from img2video.aws.clients import quick_client
from img2video.aws.jobs_table import record_quietly, record_webhook_arrival
from img2video.aws.secrets import novita_client, path_secret
from img2video.aws.task_item import set_fields, task_key, video_fields
from img2video.aws.task_tokens import answer_task
from img2video.core.clock import iso, now
from img2video.core.errors import PipelineError, ProviderRejected
from img2video.core.jobs import PollRecord
from img2video.core.settings import Settings, get_settings
from img2video.novita.models import TaskResult, TaskStatus
from img2video.observability import logger, metrics

EVENT_TYPE = "ASYNC_TASK_RESULT"
MAX_BODY_BYTES = 256 * 1024  # Novita's webhook is the Task Result answer: a few KB
# The confirmation must leave time to answer within Novita's 5 s: a slow Task Result API means "come back later".
CONFIRM_TIMEOUT = (1.0, 2.0)
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_FINISHED = (TaskStatus.SUCCEED, TaskStatus.FAILED)
# The wait's token no longer waits: the wait timed out (the execution is polling) or the execution ended.


def _answer(status: int, outcome: str) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"outcome": outcome})}


NOT_FOUND = {"statusCode": 404, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"message": "Not Found"})}


def handle_webhook(event: dict[str, Any]) -> dict[str, Any]:
    """One call to the Function URL, as its HTTP answer. 2xx for every call that was handled or is to be ignored;
    503 when an AWS or Novita fault kept it from being handled (Novita sends it again; the polls are the net)."""
    settings = get_settings()
    given = str(event.get("rawPath") or "").strip("/")
    if not hmac.compare_digest(given.encode(), path_secret(settings).encode()):
        metrics.add_metric(name="WebhookRefused", unit=MetricUnit.Count, value=1)
        return NOT_FOUND
    method = str(event.get("requestContext", {}).get("http", {}).get("method", "")).upper()
    if method != "POST":
        return _answer(405, "only POST is accepted")
    body = _body(event)
    if body is None:
        return _answer(400, "the body is not a JSON object")
    if body.get("event_type") != EVENT_TYPE:
        logger.info("Ignored a webhook of another kind", extra={"event_type": str(body.get("event_type"))[:64]})
        return _answer(200, "ignored: not an ASYNC_TASK_RESULT")
    payload = body.get("payload")
    task = payload.get("task") if isinstance(payload, dict) else None
    task_id = task.get("task_id") if isinstance(task, dict) else None
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        return _answer(400, "payload.task.task_id is missing or malformed")
    logger.append_keys(task_id=task_id)
    try:
        return _settle(task_id, settings)
    except PipelineError as exc:
        logger.warning("Could not confirm the webhook with the Task Result API", extra={"error": exc.message})
        return _answer(503, "the task's status could not be confirmed now")
    except ClientError as exc:
        logger.warning("Could not act on the webhook", extra={"error": exc.response.get("Error", {}).get("Code", "")})
        return _answer(503, "the job could not be told now")


def _body(event: dict[str, Any]) -> dict[str, Any] | None:
    raw = event.get("body") or ""
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else str(raw).encode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if len(data) > MAX_BODY_BYTES:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _settle(task_id: str, settings: Settings) -> dict[str, Any]:
    """Confirm the task's outcome once, record it on the task's item, and end the execution's wait if it is waiting."""
    dynamodb = quick_client("dynamodb")
    item = dynamodb.get_item(TableName=settings.jobs_table, Key=task_key(task_id), ConsistentRead=True).get("Item") or {}
    if "arrived" in item:  # a retry, a duplicate or a replay: the outcome is known, nothing is asked again
        metrics.add_metric(name="WebhookRepeated", unit=MetricUnit.Count, value=1)
        return _answer(200, "already handled")
    # The one request a forged call can cost: the body only names a task; Novita says what became of it.
    novita = novita_client(settings.novita_base_url, settings.novita_secret_id, read_key_afresh=False)
    try:
        result = novita.task_result(task_id, timeout=CONFIRM_TIMEOUT)
    except ProviderRejected:  # TASK_NOT_FOUND: not a task of this account
        metrics.add_metric(name="WebhookUnconfirmed", unit=MetricUnit.Count, value=1)
        return _answer(200, "ignored: no such task")
    status = result.task.task_status
    if status not in _FINISHED:
        logger.info("A webhook named a task that is not finished; ignored", extra={"status": result.task.status})
        metrics.add_metric(name="WebhookUnconfirmed", unit=MetricUnit.Count, value=1)
        return _answer(200, "ignored: the task is not finished")
    finished_at = iso(now())
    # the outcome, and the video URL just read (Store downloads from it instead of asking Novita again)
    fields = {"arrived": {"S": status.value}, "finished_at": {"S": finished_at}, **video_fields(result)}
    try:
        old = dynamodb.update_item(
            TableName=settings.jobs_table,
            Key=task_key(task_id),
            ConditionExpression="attribute_not_exists(arrived)",
            ReturnValues="ALL_OLD",
            **set_fields(fields, remove=("token",)),
        ).get("Attributes", {})
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":  # a duplicate delivery got there first
            return _answer(200, "already handled")
        raise
    metrics.add_metric(name="WebhookConfirmed", unit=MetricUnit.Count, value=1)
    job_id, history = old.get("job", {}).get("S", ""), old.get("history", {}).get("S", "")
    try:
        return _end_wait(old, job_id, result, finished_at)
    finally:  # counted for the kind whenever it came (after a poll saw the task done, too), once the job was told
        if job_id and history:
            record_webhook_arrival(history, job_id, dynamodb)
        if "slot_freed" not in old:  # the task's slot at Novita is free, and no poll has woken a job for it yet
            slot_line.task_ended(task_id, dynamodb)


def _end_wait(old: dict[str, Any], job_id: str, result: TaskResult, finished_at: str) -> dict[str, Any]:
    """End the execution's wait with the confirmed outcome, if it waits (`old` is the task's item before the outcome)."""
    status = result.task.task_status
    token = old.get("token", {}).get("S")
    if not token:  # not waiting yet, or polling right now: its next wait is refused, so it polls at once
        logger.info("Webhook confirmed before the job waited for it", extra={"status": status.value})
        return _answer(200, "recorded; the job will see it at its next poll")
    polls = int(old.get("polls", {}).get("N", "0"))
    sfn = quick_client("stepfunctions")
    if status is TaskStatus.SUCCEED:
        record = PollRecord(status="succeeded", polls=polls, progress_percent=100, finished_at=finished_at, detected_by="webhook")
        answered = answer_task(sfn, token, output=record.model_dump_json())
    else:
        message = f"Novita could not generate the video: {result.task.reason or 'no reason given'}"
        answered = answer_task(sfn, token, error="ProviderFailed", message=message)
    if not answered:  # its poll sees the outcome
        return _answer(200, "recorded; the job was polling")
    logger.info("Webhook ended the job's wait", extra={"status": status.value, "job_id": job_id})
    metrics.add_metric(name="PollsPerJob", unit=MetricUnit.Count, value=polls)
    if status is TaskStatus.SUCCEED and job_id:
        record_quietly(job_id, "storing", polls=polls, progress_percent=100, finished_at=finished_at)
    return _answer(200, "the job goes on")
