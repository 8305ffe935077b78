"""`img2video connect-bucket BUCKET`: turn on EventBridge for an existing bucket, keeping everything else it notifies.

S3 has one notification configuration per bucket, written whole: writing one with only EventBridge in it would drop
the bucket's queue, topic and Lambda notifications without a word. This reads the configuration, adds EventBridge,
reads it again just before writing (S3 offers no conditional write for it: a change in between stops the command
instead of being lost), writes it back, and reads it once more to show what was kept.
"""

from __future__ import annotations

from typing import Any

from img2video_local.commands import CommandError

KINDS = {"QueueConfigurations": "queue", "TopicConfigurations": "topic", "LambdaFunctionConfigurations": "Lambda"}


def _configuration(s3: Any, bucket: str) -> dict[str, Any]:
    answer = dict(s3.get_bucket_notification_configuration(Bucket=bucket))
    answer.pop("ResponseMetadata", None)
    return answer


def kept(configuration: dict[str, Any]) -> list[str]:
    """The bucket's other notifications, one line each: kind, id and destination."""
    lines = []
    for field, kind in KINDS.items():
        for item in configuration.get(field, []):
            destination = item.get("QueueArn") or item.get("TopicArn") or item.get("LambdaFunctionArn") or ""
            lines.append(f"{kind} {item.get('Id', '(no id)')} -> {destination} ({', '.join(item.get('Events', []))})")
    return lines


def connect(s3: Any, bucket: str) -> dict[str, Any]:
    """EventBridge on for `bucket`, every other notification kept; what was done and what was kept."""
    before = _configuration(s3, bucket)
    if "EventBridgeConfiguration" in before:
        return {"bucket": bucket, "eventbridge": "already on", "kept": kept(before)}
    if _configuration(s3, bucket) != before:
        raise CommandError(f"{bucket}'s notification configuration changed while it was read; nothing was written. Run it again.")
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={**before, "EventBridgeConfiguration": {}})
    after = _configuration(s3, bucket)
    lost = [line for line in kept(before) if line not in kept(after)]
    if "EventBridgeConfiguration" not in after or lost:
        raise CommandError(f"{bucket}'s notification configuration is not what was written; check it: lost {lost or 'EventBridge'}")
    return {"bucket": bucket, "eventbridge": "turned on", "kept": kept(after)}
