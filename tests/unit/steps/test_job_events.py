"""Job events as the steps put them: never failing a job, one terminal event per job, an order that only rises."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import responses
from img2video.aws.job_events import order_of
from img2video_local.template import REGION

from tests.conftest import Aws, jpeg_bytes
from tests.unit.steps.support import RESULT_URL, accept, aws_error, poll, put, result, state_dict


def events_queue(aws: Aws) -> str:
    """A queue behind a rule for every img2video event on the default bus, as a user's automation would have."""
    sqs, events = boto3.client("sqs", region_name=REGION), boto3.client("events", region_name=REGION)
    queue = sqs.create_queue(QueueName="jobs-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="jobs", EventPattern=json.dumps({"source": ["img2video"]}))
    events.put_targets(Rule="jobs", Targets=[{"Id": "q", "Arn": arn}])
    return queue


def delivered(queue: str) -> list[dict[str, Any]]:
    sqs, found = boto3.client("sqs", region_name=REGION), []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            found.append(json.loads(message["Body"])["detail"])
    return found


@responses.activate
@pytest.mark.parametrize("progress", ["NaN", "Infinity", "1e999"])
def test_a_progress_novita_sends_as_nan_or_infinity_never_fails_the_poll(aws: Aws, progress: str) -> None:
    queue = events_queue(aws)
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING", eta=progress, progress_percent=progress))
    assert poll(aws, state_dict())["status"] == "running"  # it raised in the event's order, after the task was paid
    [running] = delivered(queue)
    assert running["state"] == "running" and running["progress_percent"] is None and "eta_seconds" not in running


def test_a_bad_pair_seen_through_both_its_files_events_has_one_failed_event(aws: Aws) -> None:
    queue = events_queue(aws)
    put(aws, "incoming/bad.json", json.dumps({"prompt": "x", "duration": 99}))
    put(aws, "incoming/bad.jpg", jpeg_bytes())
    accept(aws, "incoming/bad.jpg")
    accept(aws, "incoming/bad.json")  # the sidecar's own event finds the same pair and the same decided notice
    assert [event["state"] for event in delivered(queue)] == ["failed"]


def test_a_missing_bus_never_keeps_a_refused_upload_from_its_notice_or_sends_it_to_the_dlq(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from img2video.aws.clients import quick_client

    def refused(**_: Any) -> Any:
        raise aws_error("ResourceNotFoundException", 400, "PutEvents")  # the bus was deleted, or its name mistyped

    monkeypatch.setattr(quick_client("events"), "put_events", refused)
    put(aws, "incoming/bad.json", json.dumps({"prompt": "x", "duration": 99}))
    put(aws, "incoming/bad.jpg", jpeg_bytes())
    assert accept(aws, "incoming/bad.jpg") == {"batchItemFailures": []}  # handled: no redelivery, no DLQ
    notices = boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=aws.notices_queue, MaxNumberOfMessages=10)["Messages"]
    assert len(notices) == 1


def test_a_later_upload_orders_after_every_state_of_an_earlier_one_whatever_its_attempt_number() -> None:
    # the attempt counter is kept 90 days; an image re-uploaded after that is attempt 1 again, and still comes later
    earlier = order_of("2026-01-01T00:00:00.000Z", 3, "succeeded", 100)
    assert order_of("2026-06-01T00:00:00.000Z", 1, "accepted") > earlier
    assert order_of("2026-01-01T00:00:00.000Z", 3, "storing", 100) < earlier < 2**53
    assert order_of("2026-01-01T00:00:00.000Z", 3, "running", float("nan")) == order_of("2026-01-01T00:00:00.000Z", 3, "running", 0)
