"""An existing bucket as the input, through the whole pipeline in local mode: its uploads come through EventBridge
("Object Created", a rule on the bucket and prefix into the UploadQueue), after `connect-bucket` turned EventBridge on
without losing the bucket's other notifications."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote_plus

import boto3
import pytest
from img2video_local.connect_bucket import connect
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION

from tests.conftest import API_KEY, jpeg_bytes
from tests.integration.test_pipeline import FAST, sidecar

pytestmark = pytest.mark.integration

BUCKET = "my-existing-photos"


@contextmanager
def existing_bucket() -> Iterator[LocalPipeline]:
    """The stack deployed with ExistingInputBucket, and the user's bucket, which already notifies a queue of theirs."""
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults())
    with LocalPipeline(parameters={"ExistingInputBucket": BUCKET}, emulator_config=config) as local:
        s3, sqs = boto3.client("s3", region_name=REGION), boto3.client("sqs", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        theirs = sqs.create_queue(QueueName="their-thumbnails")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=theirs, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "Id": "thumbnails",
                        "QueueArn": arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "photos/"}]}},
                    }
                ]
            },
        )
        yield local


def test_uploads_to_an_existing_bucket_become_jobs_and_its_other_notifications_survive() -> None:
    with existing_bucket() as local:
        assert local.input_bucket == BUCKET
        s3, sqs = boto3.client("s3", region_name=REGION), boto3.client("sqs", region_name=REGION)
        done = connect(s3, BUCKET)  # what `img2video connect-bucket` runs (its CLI: tests/integration/test_stack_cli.py)
        assert done["eventbridge"] == "turned on"
        assert done["kept"] == [f"queue thumbnails -> arn:aws:sqs:{REGION}:123456789012:their-thumbnails (s3:ObjectCreated:*)"]
        configuration = s3.get_bucket_notification_configuration(Bucket=BUCKET)
        assert "EventBridgeConfiguration" in configuration and len(configuration["QueueConfigurations"]) == 1
        assert connect(s3, BUCKET)["eventbridge"] == "already on"  # a second run changes nothing

        local.upload("incoming/trip/my cat+dog.json", sidecar())  # a plus and a space: the key EventBridge carries as is
        local.upload("incoming/trip/my cat+dog.jpg", jpeg_bytes(640, 400))
        s3.put_object(Bucket=BUCKET, Key="photos/beach.jpg", Body=jpeg_bytes())  # theirs, outside the prefix
        [notice] = [r.notice for r in local.wait_for_notices({"incoming/trip/my cat+dog.jpg"}, 120)]
        assert notice["event"] == "video.succeeded" and notice["source"] == {"bucket": BUCKET, "key": "incoming/trip/my cat+dog.jpg"}
        theirs = sqs.get_queue_url(QueueName="their-thumbnails")["QueueUrl"]
        messages = sqs.receive_message(QueueUrl=theirs, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        bodies = [json.loads(m["Body"]) for m in messages]
        keys = [unquote_plus(body["Records"][0]["s3"]["object"]["key"]) for body in bodies if "Records" in body]  # not test events
        assert keys == ["photos/beach.jpg"]  # their notification still works, untouched
        assert len(local.emulator.submissions) == 1  # photos/ outside the prefix started nothing
