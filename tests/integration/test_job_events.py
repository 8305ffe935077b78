"""Job events on EventBridge, through the whole pipeline in local mode: a rule on the bus sends them to a queue the
test reads, as a user's automation would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION

from tests.conftest import API_KEY, jpeg_bytes
from tests.integration.test_pipeline import FAST, sidecar, wait_until

pytestmark = pytest.mark.integration


@contextmanager
def with_events(parameters: dict[str, str] | None = None, **emulator: Any) -> Iterator[tuple[LocalPipeline, str]]:
    """A pipeline, and a queue that a rule on the default bus fills with every img2video event."""
    config = EmulatorConfig(api_key=API_KEY, **{**FAST, **emulator}, faults=Faults())
    with LocalPipeline(parameters=parameters or {}, emulator_config=config) as local:
        sqs, events = boto3.client("sqs", region_name=REGION), boto3.client("events", region_name=REGION)
        queue = sqs.create_queue(QueueName="my-automation")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="video-jobs", EventPattern=json.dumps({"source": ["img2video"]}))
        events.put_targets(Rule="video-jobs", Targets=[{"Id": "queue", "Arn": arn}])
        yield local, queue


def received(local: LocalPipeline, queue: str, until: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every event delivered to the queue, once one in state `until` has arrived."""
    sqs, seen = boto3.client("sqs", region_name=REGION), []

    def more() -> list[dict[str, Any]]:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])  # or it comes back, as on AWS
            seen.append(json.loads(message["Body"]))
        return [e for e in seen if e["detail"]["state"] == until]

    assert wait_until(more, timeout), [e["detail"]["state"] for e in seen]
    return seen


def test_every_state_of_a_job_is_one_event_in_order_and_the_last_is_the_notice() -> None:
    with with_events() as (local, queue):
        local.upload("incoming/sea.json", sidecar(tags={"project": "tide"}))
        local.upload("incoming/sea.jpg", jpeg_bytes(640, 400))
        [notice] = [r.notice for r in local.wait_for_notices({"incoming/sea.jpg"}, 120)]
        events = received(local, queue, "succeeded")
    assert {(e["source"], e["detail-type"]) for e in events} == {("img2video", "Video Job State Change")}
    states = [e["detail"]["state"] for e in sorted(events, key=lambda e: e["detail"]["order"])]
    assert states[0] == "accepted" and states[-1] == "succeeded" and "submitted" in states and "storing" in states
    assert states.count("succeeded") == 1 and states.count("accepted") == 1  # the image's and the sidecar's events: one job
    order = {e["detail"]["state"]: e["detail"]["order"] for e in events}
    assert order["accepted"] < order["submitted"] < order["storing"] < order["succeeded"]  # a consumer can drop a late one
    running = [e["detail"] for e in events if e["detail"]["state"] == "running"]
    assert all(r["order"] < order["storing"] and r["progress_percent"] is not None for r in running)
    [last] = [e["detail"] for e in events if e["detail"]["state"] == "succeeded"]
    assert last["notice_id"] == notice["notice_id"] and last["video"]["key"] == notice["video"]["key"]
    assert last["job_id"] == notice["job_id"] and last["request"] == notice["request"] and last["tags"] == {"project": "tide"}
    first = next(e["detail"] for e in events if e["detail"]["state"] == "accepted")
    assert first["source"] == {"bucket": local.input_bucket, "key": "incoming/sea.jpg"} and first["request"]["model"]


def test_a_refused_upload_has_one_failed_event_carrying_its_notice() -> None:
    with with_events() as (local, queue):
        local.upload("incoming/bad.json", sidecar(duration=99))
        local.upload("incoming/bad.jpg", jpeg_bytes(640, 400))
        [notice] = [r.notice for r in local.wait_for_notices({"incoming/bad.jpg"}, 120)]
        events = received(local, queue, "failed")
    assert [e["detail"]["state"] for e in events] == ["failed"]
    detail = events[0]["detail"]
    assert detail["notice_id"] == notice["notice_id"] and detail["error"]["code"] == "INVALID_SIDECAR"
    assert "duration" in detail["error"]["message"]


def test_with_events_off_no_event_is_put_and_the_job_still_succeeds() -> None:
    with with_events({"EventBusName": ""}) as (local, queue):
        local.upload("incoming/sea.json", sidecar())
        local.upload("incoming/sea.jpg", jpeg_bytes(640, 400))
        [notice] = [r.notice for r in local.wait_for_notices({"incoming/sea.jpg"}, 120)]
        assert notice["event"] == "video.succeeded"
        assert boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", []) == []
