"""The jobs table's item for one Novita task (`#task#<task_id>`): what the steps that see the task tell each other.

- The webhook's side (webhook.py, and the state machine's WaitForWebhook): the execution's wait token, the job and its
  kind while it waits, and the confirmed outcome (`arrived`) once a webhook came.
- The finished task's video URL, as the poll or the webhook that saw it done read it: Store downloads the video from
  it instead of asking Novita again, so a job costs about one Task Result call (issue "Told within a second").
  Store *takes* the URL (removes it as it reads it): a URL that turns out expired or broken is tried once, and
  Store's retry asks Novita for a fresh one, as it always did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from img2video.aws.clients import client
from img2video.core.clock import now
from img2video.core.settings import get_settings
from img2video.novita.models import TaskResult
from img2video.observability import logger

TASK_PREFIX = "#task#"
TASK_ITEM_TTL_SECONDS = 7 * 86400
# A remembered URL with less time left than this (or than half its TTL) is not used: the download itself takes time.
URL_MARGIN_SECONDS = 300
_VIDEO_FIELDS = ("video_url", "video_url_use_by", "seed", "generation")


def task_key(task_id: str) -> dict[str, dict[str, str]]:
    return {"job_id": {"S": TASK_PREFIX + task_id}}


def video_fields(result: TaskResult) -> dict[str, dict[str, str]]:
    """The finished task's video URL and how long it is valid, as item attributes; none when the answer does not say
    (no video, or no TTL: such a URL is never remembered)."""
    if not result.videos or not result.videos[0].video_url_ttl:
        return {}
    video = result.videos[0]
    ttl = float(video.video_url_ttl or 0)
    use_by = now() + ttl - min(URL_MARGIN_SECONDS, ttl / 2)
    fields = {"video_url": {"S": video.video_url}, "video_url_use_by": {"N": str(int(use_by))}}
    if "seed" in result.extra:
        fields["seed"] = {"S": json.dumps(result.extra["seed"])}
    if result.generation_seconds is not None:
        fields["generation"] = {"N": str(round(result.generation_seconds, 3))}
    return fields


def set_fields(fields: dict[str, dict[str, Any]], remove: tuple[str, ...] = ()) -> dict[str, Any]:
    """UpdateItem's arguments that set these attributes on a task's item (and its TTL, when it has none yet), and remove
    those named in `remove`."""
    names = {f"#{name}": name for name in (*fields, *remove)}
    expression = "SET " + ", ".join(f"#{name} = :{name}" for name in fields) + ", expires_at = if_not_exists(expires_at, :ttl)"
    if remove:
        expression += " REMOVE " + ", ".join(f"#{name}" for name in remove)
    values = {**{f":{name}": value for name, value in fields.items()}, ":ttl": {"N": str(int(now()) + TASK_ITEM_TTL_SECONDS)}}
    return {"UpdateExpression": expression, "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}


def remember_video(task_id: str, result: TaskResult) -> None:
    """Keep the video URL the poll just read for Store. Best effort: without it Store asks Novita again."""
    fields = video_fields(result)
    if not fields:
        return
    try:
        client("dynamodb").update_item(TableName=get_settings().jobs_table, Key=task_key(task_id), **set_fields(fields))
    except Exception as exc:
        logger.warning("Could not keep the video URL for Store", extra={"error": type(exc).__name__})


@dataclass(frozen=True)
class TaskNotes:
    """What Store learns from the task's item: whether its webhook came, and the video URL to download (if still good),
    with what Novita said along with it (the seed, and how long the task took by Novita's clock)."""

    webhook_arrived: bool = False
    video_url: str | None = None
    seed: Any = None
    generation_seconds: float | None = None


def take_notes(task_id: str) -> TaskNotes:
    """Read the task's item and remove its video URL in one call (a URL is used once). Never raises: without the notes,
    the job is stored from a fresh Task Result, and later jobs count its webhook when it records its own arrival."""
    try:
        old = (
            client("dynamodb")
            .update_item(
                TableName=get_settings().jobs_table,
                Key=task_key(task_id),
                UpdateExpression="REMOVE " + ", ".join(_VIDEO_FIELDS),
                ConditionExpression="attribute_exists(job_id)",
                ReturnValues="ALL_OLD",
            )
            .get("Attributes", {})
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":  # no item: nothing was noted
            logger.warning("Could not read the task's item", extra={"error": exc.response["Error"]["Code"]})
        return TaskNotes()
    except Exception as exc:
        logger.warning("Could not read the task's item", extra={"error": type(exc).__name__})
        return TaskNotes()
    url = old.get("video_url", {}).get("S")
    good = url is not None and float(old.get("video_url_use_by", {}).get("N", "0")) > now()
    if not good:
        return TaskNotes(webhook_arrived="arrived" in old)
    seed = json.loads(old["seed"]["S"]) if "seed" in old else None
    generation = float(old["generation"]["N"]) if "generation" in old else None
    return TaskNotes(webhook_arrived="arrived" in old, video_url=url, seed=seed, generation_seconds=generation)
