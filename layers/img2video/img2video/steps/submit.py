"""Submit: the job's one paid call to Novita, made from inside its running execution and handed back by task token."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from img2video.aws import slot_line
from img2video.aws.clients import AWS_CALL_WORST_SECONDS, QUICK_CALL_WORST_SECONDS, client, presigner
from img2video.aws.idempotency import once_per
from img2video.aws.job_events import job_changed
from img2video.aws.jobs_table import claim_submission, kind_history, record_quietly
from img2video.aws.secrets import novita_client, webhook_url
from img2video.aws.task_tokens import answer_task
from img2video.aws.transient import backoff_seconds, describe, is_transient
from img2video.core.clock import iso, now, parse_iso
from img2video.core.errors import PipelineError, ProviderThrottled, UnsupportedImage
from img2video.core.images import SNIFF_BYTES, sniff_image_type
from img2video.core.jobs import Held, Job, PollRecord, Submitted
from img2video.core.line import retry_flags, turned_away
from img2video.core.settings import Settings, get_settings
from img2video.core.sidecar import VideoRequest
from img2video.core.wait_policy import policy_for, webhook_first_wait
from img2video.novita.client import worst_case_seconds
from img2video.novita.request_body import InlineImage
from img2video.observability import job_logging, logger, metrics
from img2video.steps.handler import receive_count, sqs_records

# From the start of a message to its answer, at worst: the execution check, the daily limit's claim (2), the kind's
# history, the idempotency record (2), two key reads, the image's ETag check, up to eleven inline images
# (3 S3 calls each: its type and size in one ranged read, its bytes for each of two POST attempts), the record's update, the jobs
# table's, the answer and a re-send, plus both POST attempts (a refused key is re-read and tried once more). One
# message per invocation, so this is the whole invocation: tests/unit/test_budgets.py checks it fits the timeout.
SUBMIT_WORST_SECONDS = (
    (13 + 3 * 11) * AWS_CALL_WORST_SECONDS + 3 * QUICK_CALL_WORST_SECONDS + worst_case_seconds("POST", key_refresh=True)
)  # the quick calls: the webhook URL's path secret, whether the line for a task slot moves, and joining it when throttled

# The task token is no longer valid: the execution ended (cancelled, timed out) or another delivery already answered.


class SubmitRequest(BaseModel):
    """The SubmitQueue message the state machine sends (sqs:sendMessage.waitForTaskToken), plus our retry count."""

    model_config = ConfigDict(extra="ignore")

    token: str
    execution: str
    job: Job
    attempt: int = 0
    in_line: bool = False  # this job has an entry in the line for a task slot (slot_line.py): one is enough
    woken: bool = False  # moved here from the line as a task ended: it asks Novita whoever else waits


def submit_batch(event: dict[str, Any]) -> dict[str, Any]:
    """A SubmitQueue batch: one record per invocation (BatchSize 1, so a slow POST never starves another record of its
    time). A record whose handling raised is reported failed, and SQS delivers it again, without the invocation
    counting as a function error."""

    def submit(record: dict[str, Any]) -> None:
        request = SubmitRequest.model_validate_json(record["body"])
        with job_logging(request.job.job_id):
            handle_submit(request, receive_count(record))

    return sqs_records(event, submit, "Submit")


# --- the image as Novita receives it ---------------------------------------------------------------


def image_reference(bucket: str, key: str, request: VideoRequest, settings: Settings, etag: str = "") -> str | InlineImage:
    """A presigned SigV4 URL, or the image inline: a slow-tier task may start after any URL has expired. Only a model
    that takes inline images gets one (registry.py); the others always get a URL.

    With `etag` (the bytes checked at acceptance), an image replaced since is refused before anything is paid;
    read inline, every read is conditional on it.
    """
    transport = settings.image_transport
    if transport == "auto":
        transport = "data" if request.off_peak else "url"
    if not request.spec.image.inline:
        transport = "url"
    s3 = client("s3")
    pinned = {"IfMatch": '"' + etag.strip('"') + '"'} if etag else {}
    if transport == "url":
        if etag:
            _unchanged(lambda: s3.head_object(Bucket=bucket, Key=key, **pinned), key)
        url: str = presigner().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=settings.presign_expiry_seconds
        )
        return url
    # one ranged read gives both the type (its first bytes) and the size (its Content-Range: "bytes 0-15/123456")
    first = _unchanged(lambda: s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{SNIFF_BYTES - 1}", **pinned), key)
    head = first["Body"].read()
    total = str(first.get("ContentRange") or "").rpartition("/")[2]
    kind = sniff_image_type(head) or "jpeg"  # validated at acceptance; the fallback is never used
    # streamed into the request body chunk by chunk: memory stays flat whatever the image size
    return InlineImage(
        mime=f"image/{kind}",
        size=int(total) if total.isdigit() else int(first["ContentLength"]),  # a whole object answers without a range
        open=lambda: s3.get_object(Bucket=bucket, Key=key, **pinned)["Body"],
    )


def _unchanged(call: Callable[[], Any], key: str) -> Any:
    """The call's answer; an object whose ETag no longer matches (412) was replaced after it was accepted."""
    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            raise UnsupportedImage(
                f"{key} was replaced after it was accepted, so the image checked is gone; its new upload is checked as its own job"
            ) from None
        raise


# --- the paid part: exactly once per job ---------------------------------------------------------


def submit_task(job: Job, settings: Settings) -> dict[str, Any]:
    """POST to Novita at most once per job id; a retry gets the first answer back from DynamoDB."""

    @once_per("job_id", purpose="img2video-submit", argument="job")
    def _submit(job: dict[str, Any]) -> dict[str, Any]:
        parsed = Job.model_validate(job)
        source = parsed.source
        request = parsed.request
        image = image_reference(source.bucket, source.key, request, settings, etag=source.etag)
        end = image_reference(settings.input_bucket, parsed.end_image_key, request, settings) if parsed.end_image_key else None
        extras = tuple(image_reference(settings.input_bucket, key, request, settings) for key in parsed.extra_image_keys)
        body = request.provider_body(image, end, extras)  # an InlineImage is streamed
        novita = novita_client(settings.novita_base_url, settings.novita_secret_id)
        callback = webhook_url(settings)  # holds the path secret: it goes to Novita only, never to a log or the state
        if callback:
            body["extra"] = {"webhook": {"url": callback}}
            novita.mask(callback.rsplit("/", 1)[-1])  # an error that echoes the body must not carry the path secret on
        task_id = novita.submit(body, request.spec.endpoint)
        logger.info("Submitted to Novita", extra={"task_id": task_id, "webhook": bool(callback)})
        metrics.add_metric(name="JobsSubmitted", unit=MetricUnit.Count, value=1)
        return {"task_id": task_id, "submitted_at": iso(now()), "webhook": bool(callback)}

    result: dict[str, Any] = _submit(job=job.model_dump(mode="json"))
    return result


def submitted_output(job: Job, submitted: dict[str, Any], settings: Settings) -> Submitted:
    off_peak = job.request.off_peak
    max_wait = settings.max_wait_minutes_off_peak if off_peak else settings.max_wait_minutes
    # the first look comes when earlier jobs of this kind say it can be done (or after PollMinSeconds without history);
    # from then on each poll picks the next wait
    # (with a webhook that this kind's jobs have been getting: once the job is surely done, the poll being only its net)
    policy = policy_for(settings, off_peak)
    kind = job.history_key
    history = kind_history(kind)
    plan = policy.plan(history.samples)
    webhook = bool(submitted.get("webhook"))
    expected_by = webhook_first_wait(history.samples, history.webhook_arrivals) if webhook else None
    first = PollRecord(
        status="submitted",
        polls=0,
        wait_seconds=min(policy.first_wait(plan, expected_by), math.ceil(max_wait * 60)),  # never past the job's deadline
        plan=plan,
    )
    deadline = parse_iso(submitted["submitted_at"]) + max_wait * 60
    return Submitted(
        task_id=submitted["task_id"],
        submitted_at=submitted["submitted_at"],
        deadline=deadline,
        first_poll=first,
        # the wait token outlives the job's deadline by a day, then DynamoDB's TTL removes it
        webhook_expires_at=math.ceil(deadline) + 86400 if webhook else None,
        history_key=kind if webhook else None,
    )


# --- one SubmitQueue message, start to end -----------------------------------------------------------


def handle_submit(request: SubmitRequest, receive_count: int = 1) -> str:
    """Pay for the job once, if its execution still waits for it; answer the execution either way."""
    settings = get_settings()
    started = _running_since(request.execution)
    if started is None:
        logger.info("Execution is no longer running; nothing is submitted", extra={"execution": request.execution})
        metrics.add_metric(name="SubmitSkippedNotRunning", unit=MetricUnit.Count, value=1)
        return "skipped"
    # Jobs wait in line for a task slot and are woken in turn as tasks end: one not in line yet joins them without
    # asking Novita; one in line asks when its own retry comes (a slot may have freed unseen), then waits its turn
    # again for as long as the line's patience, not its backoff (slot_line.py).
    patience = slot_line.patience(settings) if not request.woken and slot_line.is_moving() else 0
    if patience and not request.in_line:
        return _retry_later(request, "other jobs are waiting for a task slot at Novita", patience, settings, throttled=True, asked=False)
    try:
        if settings.max_submissions_per_day:
            opens = claim_submission(request.job.job_id, settings.max_submissions_per_day, settings.quota_window_seconds)
            if opens is not None:
                return _hold(request, opens, started, settings)
        submitted = submitted_output(request.job, submit_task(request.job, settings), settings)
    except PipelineError as exc:
        if exc.transient:
            throttled = isinstance(exc, ProviderThrottled)
            return _retry_later(request, exc.message, max(exc.retry_after or 0, patience if throttled else 0) or None, settings, throttled)
        return _answer_failure(request, type(exc).__name__, exc.message)
    except Exception as exc:
        if is_transient(exc):  # AWS faults, or another delivery holding the job's record: look again later
            return _retry_later(request, describe(exc), None, settings)
        if receive_count >= settings.max_receive_count:  # last delivery: fail the task instead of vanishing into the DLQ
            logger.exception("Submit failed on its last delivery")
            return _answer_failure(
                request, "SubmitFailed", f"the job could not be submitted after {receive_count} attempts ({type(exc).__name__})"
            )
        raise
    record_quietly(request.job.job_id, "submitted", task_id=submitted.task_id, submitted_at=submitted.submitted_at)
    job_changed(request.job, "submitted", task_id=submitted.task_id, submitted_at=submitted.submitted_at)
    return _answer(request, "submitted", output=submitted.model_dump_json())


def _running_since(execution_arn: str) -> float | None:
    """When the job's execution started (epoch seconds), or None when it is no longer running (cancelled, ended)."""
    try:
        described = client("stepfunctions").describe_execution(executionArn=execution_arn)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ExecutionDoesNotExist":
            return None
        raise
    if described["status"] != "RUNNING":
        return None
    started = described.get("startDate")
    return started.timestamp() if hasattr(started, "timestamp") else now()


def _hold(request: SubmitRequest, opens: float, started: float, settings: Settings) -> str:
    """The daily limit is reached: wait in the execution until the next window, unless that is past the job's submit window."""
    limit, window = settings.max_submissions_per_day, settings.submit_window_seconds
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(opens)))
    metrics.add_metric(name="SubmitHeldByDailyLimit", unit=MetricUnit.Count, value=1)
    if opens >= started + window:
        return _answer_failure(
            request,
            "DailyLimitReached",
            f"the daily limit of {limit} Novita submissions (MaxSubmissionsPerDay) was reached and the next window opens at "
            f"{until}, after this job's {window} s to be submitted (SubmitWindowSeconds) run out; nothing was paid. "
            "Upload the image again once the window has opened, or raise the limit.",
        )
    logger.info("Daily limit reached; holding the job until the next window", extra={"until": until, "limit": limit})
    record_quietly(request.job.job_id, "held", held_until=until)
    job_changed(request.job, "held", held_until=until)
    held = Held(until=until, limit=limit)
    return _answer(request, "held", output=json.dumps({"held": held.model_dump()}))


def _answer(request: SubmitRequest, outcome: str, *, output: str | None = None, error: str | None = None, message: str = "") -> str:
    answered = answer_task(client("stepfunctions"), request.token, output=output, error=error, message=message)
    return outcome if answered else "gone"


def _answer_failure(request: SubmitRequest, error: str, message: str) -> str:
    logger.warning("Submit failed", extra={"error": error, "reason": message})
    return _answer(request, f"failed:{error}", error=error, message=message)


def _retry_later(
    request: SubmitRequest, reason: str, retry_after: float | None, settings: Settings, throttled: bool = False, asked: bool = True
) -> str:
    """Put the message back with a delay (SQS allows up to 15 minutes); the state's timeout bounds the whole wait.

    `throttled`: there was no task slot for it (`asked`: Novita said so; or others already wait in the line), so it
    also waits in the line, to be woken as soon as a task ends rather than after its backoff.
    """
    plan = turned_away(request.in_line, request.woken, throttled)
    # woken and turned away all the same (another caller took the slot first): back in the line; its own retry, from
    # when it was first turned away, is still on the SubmitQueue, so it needs no second one
    if plan.back_in_line_only and slot_line.join(request.model_copy(update={"woken": False, "in_line": False}).model_dump_json()):
        logger.info("Woken, but the slot was taken; back in the line", extra={"reason": reason})
        metrics.add_metric(name="SubmitRetried", unit=MetricUnit.Count, value=1)
        return "in line"
    delay = int(min(900, backoff_seconds(request.attempt, settings.submit_retry_max_seconds, base=5, retry_after=retry_after)))
    # once per job: its own retry says it has an entry, and the entry, once woken and turned away again, joins anew
    joined = plan.joins_line and slot_line.join(
        request.model_copy(update={"attempt": request.attempt + 1, "in_line": False, "woken": False}).model_dump_json()
    )
    in_line, woken = retry_flags(request.in_line, request.woken, throttled, joined)
    again = request.model_copy(update={"attempt": request.attempt + 1, "in_line": in_line, "woken": woken})
    client("sqs").send_message(QueueUrl=settings.submit_queue_url, MessageBody=again.model_dump_json(), DelaySeconds=delay)
    if asked:
        logger.info("Novita is busy; submitting later", extra={"reason": reason, "delay_seconds": delay, "attempt": request.attempt + 1})
        metrics.add_metric(name="SubmitRetried", unit=MetricUnit.Count, value=1)
    else:
        logger.info("Waiting in the line for a task slot", extra={"reason": reason, "delay_seconds": delay, "attempt": request.attempt + 1})
        metrics.add_metric(name="SubmitWaitedInLine", unit=MetricUnit.Count, value=1)
    return "retrying" if asked else "in line"
