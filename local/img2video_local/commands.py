"""The user's commands (drop, status, jobs, watch, retry, cancel, fetch) against any stack: a deployed one, named by
its CloudFormation stack, or the embedded one that `img2video local up` serves on loopback. One code path: boto3
against AWS's endpoints, or against the embedded stack's, with the same calls either way."""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from img2video.aws.jobs_table import ATTEMPTS_PREFIX, BATCH_PREFIX, BY_SOURCE_INDEX, BY_STATE_INDEX, STATES, plain
from img2video.aws.s3_objects import is_missing
from img2video.core.keys import IMAGE_SUFFIXES

TERMINAL = ("succeeded", "failed", "cancelled")
LOCAL_STATE_ENV = "IMG2VIDEO_LOCAL_STATE"


class CommandError(Exception):
    """A problem the user can fix (exit code 2 for usage, 1 otherwise)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def local_state_path() -> Path:
    return Path(os.environ.get(LOCAL_STATE_ENV) or Path.home() / ".img2video" / "local-stack.json")


# The stack parameters that judge a sidecar, by the setting each becomes (core/settings.py).
SIDECAR_PARAMETERS = {
    "DefaultModel": "default_model",
    "AllowedModels": "allowed_models",
    "DefaultResolution": "default_resolution",
    "DefaultDuration": "default_duration",
    "DefaultMovementAmplitude": "default_movement_amplitude",
    "DefaultWatermark": "default_watermark",
}


@dataclass
class Stack:
    """What the commands need of a stack: its resources (from the stack's outputs) and where its APIs answer."""

    name: str
    region: str
    input_bucket: str
    input_prefix: str
    output_bucket: str
    jobs_table: str
    state_machine_arn: str
    endpoint_url: str | None = None  # the embedded stack's loopback endpoint; None for AWS itself
    default_prompt: str = ""  # the stack's DefaultPrompt: an image without a sidecar is then a job too
    # the stack's settings that judge a sidecar (DefaultModel, AllowedModels, Default...): drop checks with them
    sidecar_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def deployed(cls, stack_name: str, region: str | None = None) -> Stack:
        """A deployed stack, found by name with the user's ordinary credentials and region."""
        session = boto3.session.Session(region_name=region)
        try:
            [described] = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as exc:
            raise CommandError(f"stack {stack_name}: {exc.response['Error']['Message']}") from None
        outputs = {item["OutputKey"]: item["OutputValue"] for item in described.get("Outputs", [])}
        parameters = {item["ParameterKey"]: item.get("ParameterValue", "") for item in described.get("Parameters", [])}
        missing = {"InputBucketName", "InputPrefix", "OutputBucketName", "JobsTableName", "StateMachineArn"} - set(outputs)
        if missing:
            raise CommandError(f"stack {stack_name} has no output {', '.join(sorted(missing))}: is it an img2video stack, up to date?")
        return cls(
            name=stack_name,
            region=session.region_name or "us-east-1",
            input_bucket=outputs["InputBucketName"],
            input_prefix=outputs["InputPrefix"],
            output_bucket=outputs["OutputBucketName"],
            jobs_table=outputs["JobsTableName"],
            state_machine_arn=outputs["StateMachineArn"],
            default_prompt=parameters.get("DefaultPrompt", ""),
            sidecar_settings={setting: parameters[name] for name, setting in SIDECAR_PARAMETERS.items() if parameters.get(name)},
        )

    @classmethod
    def embedded(cls) -> Stack:
        """The stack `img2video local up` is serving (it writes where it answers to a small file)."""
        path = local_state_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError("no local stack is running: start one with `img2video local up` (in another terminal)") from None
        return cls(**data)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    def client(self, service: str) -> Any:
        return _client(service, self.region, self.endpoint_url)


@functools.cache
def _client(service: str, region: str, endpoint_url: str | None) -> Any:
    """One client per service and stack, made once: `watch` asks the table every second."""
    config = Config(retries={"mode": "standard", "max_attempts": 5}, signature_version="s3v4" if service == "s3" else None)
    if endpoint_url is None:
        return boto3.client(service, region_name=region, config=config)
    return boto3.client(
        service, region_name=region, endpoint_url=endpoint_url, aws_access_key_id="local", aws_secret_access_key="local", config=config
    )


# -- reading the jobs table ----------------------------------------------------------------------------------


def get_job(stack: Stack, job_id: str) -> dict[str, Any] | None:
    item = stack.client("dynamodb").get_item(TableName=stack.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get("Item")
    return plain(item) if item else None


def _query(stack: Stack, **arguments: Any) -> Iterator[dict[str, Any]]:
    paginator = stack.client("dynamodb").get_paginator("query")
    for page in paginator.paginate(TableName=stack.jobs_table, **arguments):
        for item in page["Items"]:
            yield plain(item)


def attempts_of(stack: Stack, key: str) -> list[dict[str, Any]]:
    """Every job of one image, newest first (the by-source index)."""
    return list(
        _query(
            stack,
            IndexName=BY_SOURCE_INDEX,
            KeyConditionExpression="source_key = :key",
            ExpressionAttributeValues={":key": {"S": key}},
            ScanIndexForward=False,
        )
    )


def jobs_in(stack: Stack, states: tuple[str, ...], since: str | None = None) -> list[dict[str, Any]]:
    """Jobs in these states, updated since `since` (ISO), newest first: one query per state (the by-state index)."""
    found: list[dict[str, Any]] = []
    for state in states:
        condition, values = "#state = :state", {":state": {"S": state}}
        if since:
            condition += " AND updated_at >= :since"
            values[":since"] = {"S": since}
        found += _query(
            stack,
            IndexName=BY_STATE_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
        )
    # a job that changed state between two of these queries is in both: keep what was seen of it last
    latest: dict[str, dict[str, Any]] = {}
    for job in found:
        seen = latest.get(str(job["job_id"]))
        if seen is None or str(job.get("updated_at", "")) >= str(seen.get("updated_at", "")):
            latest[str(job["job_id"])] = job
    return sorted(latest.values(), key=lambda job: str(job.get("updated_at", "")), reverse=True)


def parse_since(text: str | None) -> str | None:
    """ "30m", "2h", "1d", or an ISO date or time (UTC): the ISO instant the jobs table's updated_at compares with."""
    if not text:
        return None
    relative = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return _iso(datetime.now(UTC) - timedelta(seconds=seconds))
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f'--since "{text}": give a duration like 30m, 2h, 1d, or an ISO date like 2026-11-24', exit_code=2) from None
    return _iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def find_jobs(stack: Stack, job_or_key: str) -> list[dict[str, Any]]:
    """A job by its id, or every job of an image key (newest first)."""
    if "/" in job_or_key or job_or_key.lower().endswith(IMAGE_SUFFIXES):
        key = job_or_key if job_or_key.startswith(stack.input_prefix) else stack.input_prefix + job_or_key.lstrip("/")
        return attempts_of(stack, key)
    job = get_job(stack, job_or_key)
    return [job] if job else []


def batch_status(stack: Stack, manifest: str) -> dict[str, Any]:
    """The newest batch of a manifest key (`s3://bucket/key`, a key, or a key under the input prefix): its lines,
    how many have ended and how, and whether its `batch.completed` notice went out."""
    key = manifest.split("/", 3)[3] if manifest.startswith("s3://") and manifest.count("/") >= 3 else manifest.lstrip("/")
    key = key if key.startswith(stack.input_prefix) else stack.input_prefix + key
    dynamodb = stack.client("dynamodb")
    counter = dynamodb.get_item(TableName=stack.jobs_table, Key={"job_id": {"S": ATTEMPTS_PREFIX + key}}, ConsistentRead=True).get("Item")
    if not counter or "latest_batch" not in counter:
        raise CommandError(f"no batch of {key} in the jobs table (is it a .batch.jsonl or .batch.csv under {stack.input_prefix}?)")
    batch_id = counter["latest_batch"]["S"]
    item = dynamodb.get_item(TableName=stack.jobs_table, Key={"job_id": {"S": BATCH_PREFIX + batch_id}}, ConsistentRead=True).get("Item")
    if not item:
        raise CommandError(f"the batch {batch_id} of {key} has no item in the jobs table")
    failed = sorted(int(n) for n in item.pop("failed_lines", {}).get("NS", []))
    item.pop("ended", None)
    data = plain(item)
    status = {
        "manifest": key,
        "batch_id": batch_id,
        "attempt": data.get("attempt"),
        "lines": data.get("lines"),  # None until the manifest has been read and every line listed
        "ended": int(data.get("ended_count", 0)),
        "counts": {outcome: int(data.get(f"{outcome}_count", 0)) for outcome in TERMINAL},
        "failed_lines": failed,
        "completed_at": data.get("completed_at"),
        "error": {"code": data["error_code"], "message": data.get("error_message", "")} if "error_code" in data else None,
    }
    return status


# -- changing things -----------------------------------------------------------------------------------------


def drop(stack: Stack, uploads: list[tuple[str, bytes]]) -> None:
    s3 = stack.client("s3")
    for key, data in uploads:
        s3.put_object(Bucket=stack.input_bucket, Key=key, Body=data)


def execution_arn(stack: Stack, job_id: str) -> str:
    return stack.state_machine_arn.replace(":stateMachine:", ":execution:", 1) + ":" + job_id


def cancel(stack: Stack, job_id: str) -> str:
    """Stop the job's execution; the backstop then publishes its one notice, CANCELLED. Returns what happened."""
    job = get_job(stack, job_id)
    if job is None:
        raise CommandError(f"no job {job_id} in the jobs table")
    if job.get("state") in TERMINAL:
        raise CommandError(f"job {job_id} has already ended ({job['state']}); nothing to cancel")
    try:
        stack.client("stepfunctions").stop_execution(
            executionArn=execution_arn(stack, job_id), error="Cancelled", cause="cancelled by the user (img2video cancel)"
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ExecutionDoesNotExist":
            raise CommandError(f"job {job_id} has no execution (it ended at acceptance)") from None
        raise
    return f"cancelled {job_id}: its video.failed notice (CANCELLED) follows"


def retry(stack: Stack, job: dict[str, Any]) -> str:
    """A new attempt of the job's image: the same bytes uploaded again (an in-place copy), which Accept sees as a new
    upload, so it gets a new job id, a new execution and a new notice, after the same checks as any upload."""
    key = str(job["source_key"])
    s3 = stack.client("s3")
    try:
        head = s3.head_object(Bucket=stack.input_bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            raise CommandError(f"{key} is no longer in the input bucket; upload it again to retry") from None
        raise
    # S3 copies an object onto itself only when something is "replaced": every header it had, given again as it was
    kept = {name: head[name] for name in _COPIED_HEADERS if head.get(name)}
    s3.copy_object(
        Bucket=stack.input_bucket,
        Key=key,
        CopySource={"Bucket": stack.input_bucket, "Key": key},
        MetadataDirective="REPLACE",
        Metadata=head.get("Metadata", {}),
        **kept,
    )
    return key


_COPIED_HEADERS = ("ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage", "CacheControl", "Expires")


def fetch(stack: Stack, job: dict[str, Any], out_dir: Path, link_seconds: int = 3600) -> tuple[list[Path], str]:
    """The job's video and manifest into `out_dir`, and a fresh link to the video."""
    if job.get("state") != "succeeded" or not job.get("video_key"):
        raise CommandError(f"job {job['job_id']} has no video ({job.get('state')})")
    s3 = stack.client("s3")
    video_key = str(job["video_key"])
    paths = []
    for key in (video_key, video_key.removesuffix(".mp4") + ".json"):
        target = out_dir / key.rsplit("/", 1)[-1]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(stack.output_bucket, key, str(target))
        paths.append(target)
    link: str = s3.generate_presigned_url("get_object", Params={"Bucket": stack.output_bucket, "Key": video_key}, ExpiresIn=link_seconds)
    return paths, link


def wait_for(stack: Stack, job_ids: list[str], timeout: float, on_update: Any = None) -> list[dict[str, Any]]:
    """Poll the jobs table until every job has ended (or the timeout passes); the jobs as last seen."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = [get_job(stack, job_id) or {"job_id": job_id, "state": "unknown"} for job_id in job_ids]
        if on_update:
            on_update(jobs)
        if all(job.get("state") in TERMINAL for job in jobs) or time.monotonic() >= deadline:
            return jobs
        time.sleep(1)


def uploaded_at(stack: Stack, key: str) -> str:
    """The image's LastModified as S3 reports it (S3's clock, not this machine's), in whole seconds."""
    modified = stack.client("s3").head_object(Bucket=stack.input_bucket, Key=key)["LastModified"]
    return str(modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))


def jobs_of_keys(stack: Stack, keys: list[str], timeout: float, not_these: frozenset[str] = frozenset()) -> dict[str, str]:
    """The job ids Accept gave to these images' current uploads (matched by the image's LastModified, which the job
    records as `uploaded_at`), waiting for Accept to have made them: by key, for those it made in time. `not_these`:
    earlier jobs of the same keys (a retry's copy may land in the second of the upload it repeats)."""
    uploads = {key: uploaded_at(stack, key) for key in keys}
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for key in keys:
            latest = [
                job
                for job in attempts_of(stack, key)
                if str(job.get("uploaded_at", ""))[:19] == uploads[key] and job["job_id"] not in not_these
            ]
            if latest:
                found[key] = str(latest[0]["job_id"])
        if len(found) == len(keys) or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


__all__ = ["STATES", "TERMINAL", "CommandError", "Stack"]
