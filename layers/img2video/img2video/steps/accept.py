"""Accept: pair an image with its sidecar, validate both, and start the job's one execution before anything is paid."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from img2video.aws.batches import open_batch
from img2video.aws.clients import AWS_CALL_WORST_SECONDS, QUICK_CALL_WORST_SECONDS, client
from img2video.aws.intake import (
    PendingJob,
    accept_job,
    end_image_key,
    etag,
    extra_image_keys,
    head,
    refuse,
    start_named_execution,
    validated_image,
)
from img2video.aws.invocation import remaining_seconds
from img2video.aws.jobs_table import latest_attempt
from img2video.aws.s3_objects import tag_source
from img2video.aws.transient import backoff_seconds, describe, is_transient
from img2video.core.batch import in_batch_folder, is_manifest, manifest_name
from img2video.core.clock import iso, now, parse_iso
from img2video.core.errors import InvalidSidecar, MissingSidecar, PipelineError, UnsupportedImage
from img2video.core.jobs import Job, SourceObject, job_id
from img2video.core.keys import (
    InputKey,
    decode_event_key,
    image_key_problem,
    output_key_problem,
    output_keys,
    parse_input_key,
    pick_sidecar,
)
from img2video.core.settings import Settings, get_settings
from img2video.core.sidecar import MAX_EXTRA_IMAGES, MAX_SIDECAR_BYTES, default_request, parse_sidecar
from img2video.observability import job_logging, logger, metrics
from img2video.steps.handler import NotNow, receive_count, sqs_records

MESSAGE_MARKER = "img2video"
# A passing AWS fault is looked at again, with backoff, this many times before the upload is reported as failed.
ACCEPT_RETRIES = 8
# The slowest one upload can be when every AWS call it makes times out on every attempt (see clients.py):
# a refusal that ends in INTERNAL makes 19 calls and two job events (quick calls), and each extra image 4 more calls
# (tests/unit/test_budgets.py).
ACCEPT_RECORD_WORST_SECONDS = (19 + 4 * MAX_EXTRA_IMAGES) * AWS_CALL_WORST_SECONDS + 2 * QUICK_CALL_WORST_SECONDS


@dataclass(frozen=True)
class Trigger:
    """One reason to look at a key: an S3 event, or our own delayed re-check of it."""

    bucket: str
    key: str
    first_seen: float  # epoch seconds of the upload (or of the first look)
    attempt: int = 0
    reason: str = "s3"


class Outcome(StrEnum):
    """What Accept did with one image's event (logged with its key)."""

    ACCEPTED = "accepted"  # its execution started
    BATCH = "batch"  # a manifest: its batch's execution started, which makes each of its lines a job
    REFUSED = "refused"  # its one failure notice was published (the code is on the log line before)
    IGNORED = "ignored"  # not an input of ours, or gone
    WAITING_FOR_IMAGE = "waiting-for-image"  # a sidecar whose image has not come: the image's event starts the job
    AWAITING_SIDECAR = "awaiting-sidecar"  # looked at again once the sidecar's grace period is over
    AWAITING_PARTNER = "awaiting-partner"  # one file of a pair uploaded again: the other may be on its way
    RETRYING = "retrying"  # a passing fault: looked at again later, with backoff


def accept_uploads(event: dict[str, Any]) -> dict[str, Any]:
    """An UploadQueue batch (up to ten S3 events), record by record. Another record is started only while this
    invocation surely has the time to finish it (the first always fits); one that would not is left for its next
    delivery, unless this is its last."""
    settings, started = get_settings(), 0

    def accept(record: dict[str, Any]) -> None:
        nonlocal started
        count = receive_count(record)
        if started and remaining_seconds() < ACCEPT_RECORD_WORST_SECONDS and count < settings.max_receive_count:
            raise NotNow("not enough time left in this invocation for another upload")
        started += 1
        for trigger in triggers_from_body(record["body"]):
            handle_trigger(trigger, count)

    return sqs_records(event, accept, "Accept")


def triggers_from_body(body: str) -> list[Trigger]:
    """Read an SQS body: an S3 notification, EventBridge's "Object Created" (an existing bucket's uploads), the
    s3:TestEvent (ignored), or our own re-check. Each source's key is decoded as that source encodes it: S3
    notifications URL-encode keys (`+` for a space); EventBridge events carry the key as stored."""
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("Event") == "s3:TestEvent":
        return []
    if MESSAGE_MARKER in data:
        return [Trigger(**data[MESSAGE_MARKER])]
    if data.get("source") == "aws.s3" and data.get("detail-type") == "Object Created":
        detail = data.get("detail") or {}
        return [Trigger(bucket=detail["bucket"]["name"], key=detail["object"]["key"], first_seen=parse_iso(data.get("time")))]
    triggers = []
    for record in data.get("Records", []):
        if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        triggers.append(
            Trigger(
                bucket=record["s3"]["bucket"]["name"],
                key=decode_event_key(record["s3"]["object"]["key"]),
                first_seen=parse_iso(record.get("eventTime")),
            )
        )
    return triggers


# --- S3 reads -------------------------------------------------------------------------------


# When one file of a pair is uploaded again and the other is the one the image's last job used, the user may be
# re-uploading both: wait until the new one is SETTLE_SECONDS old, so that re-uploading both files makes one new
# attempt, not one with the old partner and another with the new.
SETTLE_SECONDS = 10


def _partner_may_follow(image_key: str, image_head: dict[str, Any], sidecar_head: dict[str, Any]) -> float:
    """Seconds to wait for the other file of a pair that is being uploaded again (0: start the job now)."""
    if "LastModified" not in image_head or "LastModified" not in sidecar_head:
        return 0
    image_time, sidecar_time = image_head["LastModified"].timestamp(), sidecar_head["LastModified"].timestamp()
    age = now() - max(image_time, sidecar_time)
    if age >= SETTLE_SECONDS:
        return 0
    latest = latest_attempt(image_key)
    if latest is None:
        return 0
    image_used = str(latest.get("uploaded_at", ""))[:19] == iso(image_time)[:19]
    sidecar_used = str(latest.get("sidecar_uploaded_at", ""))[:19] == iso(sidecar_time)[:19]
    return float(SETTLE_SECONDS - age + 1) if image_used != sidecar_used else 0


def _upload_marker(*heads: dict[str, Any]) -> str:
    """What changes on every PUT, identical bytes or not: each object's LastModified (whole seconds, as every S3 API
    reports it), so the same upload seen through any event gives one job, and a new upload a new one."""
    return ":".join(str(int(head["LastModified"].timestamp())) if "LastModified" in head else "" for head in heads)


def _siblings(bucket: str, of: InputKey, prefix: str) -> dict[str, tuple[InputKey, dict[str, Any]]]:
    """Every image and sidecar with the same folder and stem, with what S3 lists of each (ETag, size)."""
    found = {}
    for listing_prefix in of.sibling_prefixes():  # one listing for ASCII names, two when NFC and NFD differ
        listing = client("s3").list_objects_v2(Bucket=bucket, Prefix=listing_prefix, MaxKeys=100)
        for item in listing.get("Contents", []):
            parsed = parse_input_key(item["Key"], prefix)
            if parsed and parsed.kind != "other" and parsed.same_stem(of):
                found[parsed.key] = (parsed, {"ETag": item["ETag"], "ContentLength": item["Size"], "LastModified": item["LastModified"]})
    return found


# --- the job's one execution -------------------------------------------------------------------


# --- one trigger, start to end --------------------------------------------------------------------


def requeue(trigger: Trigger, delay_seconds: float, settings: Settings) -> None:
    """Look at the key again later (SQS delays up to 15 minutes per hop)."""
    delay = int(max(0, min(900, delay_seconds)))
    client("sqs").send_message(
        QueueUrl=settings.upload_queue_url, MessageBody=json.dumps({MESSAGE_MARKER: asdict(trigger)}), DelaySeconds=delay
    )
    logger.info("Re-queued", extra={"key": trigger.key, "reason": trigger.reason, "delay_seconds": delay})


@dataclass(frozen=True)
class Pair:
    """An image and its sidecar (empty key when there is none), with what S3 listed of each."""

    image: InputKey
    image_head: dict[str, Any]
    sidecar_key: str
    sidecar_head: dict[str, Any]
    shares_stem: bool = False  # cat.jpg and cat.png side by side: their videos must not overwrite each other

    def output_name(self, requested: str | None) -> str:
        name = requested or self.image.stem
        return f"{name}-{self.image.suffix[1:].lower()}" if self.shares_stem else name


def _uploaded_at(head: dict[str, Any], trigger: Trigger) -> str:
    return iso(head["LastModified"].timestamp()) if "LastModified" in head else iso(trigger.first_seen)


def handle_trigger(trigger: Trigger, receive_count: int = 1) -> list[Outcome]:
    """Process one trigger: what happened to each image it concerns. Raises only on unexpected errors."""
    settings = get_settings()
    try:
        return _handle_trigger(trigger, receive_count, settings)
    except Exception as exc:
        # a passing AWS fault before the pair is known (listing, a HEAD): look again later, never the DLQ
        if _may_look_again(exc, trigger):
            return [_retry_later(trigger, _reason(exc), settings)]
        raise


def _may_look_again(exc: Exception, trigger: Trigger) -> bool:
    """The one rule for a passing fault at acceptance, AWS's or the pipeline's: looked at again later, with backoff,
    at most ACCEPT_RETRIES times; after that the job ends in its notice."""
    transient = exc.transient if isinstance(exc, PipelineError) else is_transient(exc)
    return transient and trigger.attempt < ACCEPT_RETRIES


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, PipelineError) else describe(exc)


def _handle_trigger(trigger: Trigger, receive_count: int, settings: Settings) -> list[Outcome]:
    if trigger.bucket == settings.input_bucket and trigger.key.startswith(settings.input_prefix) and is_manifest(trigger.key):
        return [_start_batch(trigger, settings)]
    parsed = parse_input_key(trigger.key, settings.input_prefix)
    problem = image_key_problem(trigger.key, settings.input_prefix) if trigger.bucket == settings.input_bucket else None
    if problem:
        return [_reject_key(trigger, problem)]
    if trigger.bucket != settings.input_bucket or parsed is None or parsed.kind == "other":
        logger.info("Ignoring key", extra={"key": trigger.key})
        return [Outcome.IGNORED]
    if in_batch_folder(parsed.relative_folder(settings.input_prefix)):
        logger.info("A batch's image: its manifest's line makes its job, not a sidecar", extra={"key": trigger.key})
        return [Outcome.IGNORED]
    siblings = _siblings(trigger.bucket, parsed, settings.input_prefix)
    if parsed.kind == "sidecar":
        # A sidecar completes the pair for every image of its name (cat.jpg and cat.png alike).
        images = sorted(key for key, (sibling, _) in siblings.items() if sibling.kind == "image")
        if not images:
            logger.info("Sidecar has no image yet; the image's own upload will start the job", extra={"key": trigger.key})
            return [Outcome.WAITING_FOR_IMAGE]
        return [_handle_image(replace(trigger, key=image), siblings, settings, receive_count) for image in images]
    if parsed.key not in siblings:
        logger.info("Image no longer exists", extra={"key": parsed.key})
        return [Outcome.IGNORED]
    return [_handle_image(trigger, siblings, settings, receive_count)]


def _handle_image(
    trigger: Trigger, siblings: dict[str, tuple[InputKey, dict[str, Any]]], settings: Settings, receive_count: int
) -> Outcome:
    """One image whose siblings are listed: wait for its sidecar, or pair them into a job and accept it."""
    image, image_head = siblings[trigger.key]
    problem = image_key_problem(image.key, settings.input_prefix)
    if problem:  # reached through its sidecar's event: the same refusal (and job id) as through its own
        return _reject_key(trigger, problem)
    sidecar = pick_sidecar(image, [sibling for sibling, _ in siblings.values()])
    if sidecar is None and now() - trigger.first_seen < settings.sidecar_grace_seconds:
        requeue(
            replace(trigger, reason="await-sidecar"),
            settings.sidecar_grace_seconds - (now() - trigger.first_seen) + 1,
            settings,
        )
        tag_source(trigger.bucket, image.key, "queued", "")
        return Outcome.AWAITING_SIDECAR
    if sidecar is not None:
        settle = _partner_may_follow(image.key, image_head, siblings[sidecar.key][1])
        if settle:  # one file of the pair was just uploaded again: its partner may be on its way too
            requeue(replace(trigger, reason="await-partner"), settle, settings)
            return Outcome.AWAITING_PARTNER

    pair = Pair(
        image,
        image_head,
        *((sidecar.key, siblings[sidecar.key][1]) if sidecar else ("", {})),
        shares_stem=sum(1 for sibling, _ in siblings.values() if sibling.kind == "image") > 1,
    )
    source = SourceObject(bucket=trigger.bucket, key=image.key, etag=etag(image_head))
    pending = PendingJob(
        job_id=job_id(
            trigger.bucket,
            image.key,
            source.etag,
            pair.sidecar_key,
            etag(pair.sidecar_head),
            image.stem,
            _upload_marker(image_head, pair.sidecar_head),
        ),
        source=source,
        sidecar_key=pair.sidecar_key,
        uploaded_at=_uploaded_at(image_head, trigger),
        sidecar_uploaded_at=_uploaded_at(pair.sidecar_head, trigger) if pair.sidecar_key else "",
    )
    with job_logging(pending.job_id):
        outcome = _outcome(trigger, pair, pending, settings, receive_count)
        logger.info("Handled upload", extra={"key": trigger.key, "outcome": outcome})
        return outcome


def _outcome(trigger: Trigger, pair: Pair, pending: PendingJob, settings: Settings, receive_count: int) -> Outcome:
    """Accept the job, or decide what its failure means: a notice now, a look again later, or a redelivery."""
    try:
        return _accept(trigger, pair, pending, settings)
    except Exception as exc:
        if _may_look_again(exc, trigger):
            return _retry_later(trigger, _reason(exc), settings)
        if isinstance(exc, PipelineError):  # the input's own problem, or a passing one that never passed
            refuse(pending, exc.code, exc.message)
            return Outcome.REFUSED
        if receive_count >= settings.max_receive_count or is_transient(exc):
            # last delivery (or AWS stayed faulty through every re-check): tell the user instead of vanishing into the DLQ
            logger.exception("Accept failed on its last attempt")
            refuse(
                pending,
                "INTERNAL",
                f"the upload could not be accepted after {max(receive_count, trigger.attempt + 1)} attempts ({type(exc).__name__})",
            )
            return Outcome.REFUSED
        raise


def _reject_key(trigger: Trigger, problem: str) -> Outcome:
    """An image whose key cannot become a job: one failure notice, nothing paid."""
    found = head(trigger.bucket, trigger.key)
    if found is None:
        return Outcome.IGNORED
    stem = trigger.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    pending = PendingJob(
        job_id=job_id(trigger.bucket, trigger.key, etag(found), "", "", stem, _upload_marker(found)),
        source=SourceObject(bucket=trigger.bucket, key=trigger.key, etag=etag(found)),
        uploaded_at=_uploaded_at(found, trigger),
    )
    refuse(pending, "UNSUPPORTED_IMAGE", problem)
    return Outcome.REFUSED


def _accept(trigger: Trigger, pair: Pair, pending: PendingJob, settings: Settings) -> Outcome:
    image, image_head, sidecar_key, sidecar_head = pair.image, pair.image_head, pair.sidecar_key, pair.sidecar_head
    if not sidecar_key:
        if not settings.default_prompt:
            raise MissingSidecar(
                f"no sidecar for {image.key} after {settings.sidecar_grace_seconds} s: upload "
                f"{image.folder}{image.stem}.json or {image.folder}{image.stem}.txt with the prompt to start the job"
            )
        request = default_request(settings)
    else:
        size = int(sidecar_head.get("ContentLength", 0))
        if size > MAX_SIDECAR_BYTES:
            raise InvalidSidecar(f"{sidecar_key} is {size} bytes; a sidecar may be at most {MAX_SIDECAR_BYTES} bytes (64 KiB)")
        raw = client("s3").get_object(Bucket=trigger.bucket, Key=sidecar_key)["Body"].read()
        request = parse_sidecar(raw, sidecar_key, settings)
    pending.request, pending.tags = request.for_notice(), request.tags
    first = validated_image(trigger.bucket, image.key, int(image_head["ContentLength"]), request.spec)
    end_key = end_image_key(request, first, image.folder, settings)
    extra_keys = extra_image_keys(request.extra_images, image.folder, settings, request.spec)
    video_key, manifest_key = output_keys(image, settings.input_prefix, settings.output_prefix, pair.output_name(request.output_name))
    problem = output_key_problem(video_key, manifest_key)
    if problem:
        raise (InvalidSidecar if request.output_name else UnsupportedImage)(f"{image.key}: {problem}")
    job = Job(
        job_id=pending.job_id,
        attempt=pending.open(),
        source=pending.source,
        sidecar=SourceObject(bucket=trigger.bucket, key=sidecar_key, etag=etag(sidecar_head)) if sidecar_key else None,
        request=request,
        extra_image_keys=tuple(extra_keys),
        end_image_key=end_key,
        video_key=video_key,
        manifest_key=manifest_key,
        uploaded_at=pending.uploaded_at,
    )
    accept_job(job, pending, settings)
    tag_source(trigger.bucket, image.key, "queued", job.job_id)
    return Outcome.ACCEPTED


def _start_batch(trigger: Trigger, settings: Settings) -> Outcome:
    """A manifest: its batch's item (numbered as the manifest's next attempt) and its one execution, which reads the
    manifest and makes each line a job (statemachine/batch.asl.json). A repeated event finds both and changes nothing."""
    found = head(trigger.bucket, trigger.key)
    if found is None:
        return Outcome.IGNORED
    name = manifest_name(trigger.key)
    batch_id = job_id(trigger.bucket, trigger.key, etag(found), "", "", f"batch-{name}", _upload_marker(found))
    uploaded_at = _uploaded_at(found, trigger)
    with job_logging(batch_id):
        attempt = open_batch(batch_id, trigger.bucket, trigger.key, uploaded_at).attempt
        batch = {
            "batch_id": batch_id,
            "attempt": attempt,
            "manifest": {"bucket": trigger.bucket, "key": trigger.key, "etag": etag(found)},
            "uploaded_at": uploaded_at,
        }
        start_named_execution(settings.batch_state_machine_arn, batch_id, {"batch": batch})
        logger.info("Handled upload", extra={"key": trigger.key, "outcome": Outcome.BATCH, "attempt": attempt})
    return Outcome.BATCH


def _retry_later(trigger: Trigger, reason: str, settings: Settings) -> Outcome:
    logger.warning("Passing fault; looking again later", extra={"reason": reason, "attempt": trigger.attempt})
    requeue(
        replace(trigger, attempt=trigger.attempt + 1, reason="aws-retry"),
        backoff_seconds(trigger.attempt, settings.submit_retry_max_seconds, base=2),
        settings,
    )
    metrics.add_metric(name="AcceptRetried", unit=MetricUnit.Count, value=1)
    return Outcome.RETRYING
