"""AWS's own faults, injected into the handlers' boto3 calls: none may fail a paid video, double a notice or lose one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline, Received, execution_threads

from tests.conftest import API_KEY, jpeg_bytes
from tests.integration.test_pipeline import wait_until

pytestmark = pytest.mark.integration

FAST = {"generation_seconds": 1.0, "queue_seconds": 0.2, "fps": 4}
SIDECAR = json.dumps({"prompt": "waves roll in", "duration": 1, "resolution": "540p"}).encode()


@contextmanager
def pipeline(
    aws_faults: str, faults: str = "", time_scale: float = 1.0, emulator_scale: float = 1.0, **parameters: str
) -> Iterator[LocalPipeline]:
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults.parse(faults), time_scale=emulator_scale)  # type: ignore[arg-type]
    with LocalPipeline(
        parameters=parameters, emulator_config=config, aws_faults=aws_faults, aws_faults_seed=5, time_scale=time_scale
    ) as local:
        yield local


def one_job(local: LocalPipeline, key: str, timeout: float = 90) -> list[Received]:
    local.upload(key.rsplit(".", 1)[0] + ".json", SIDECAR)
    local.upload(key, jpeg_bytes())
    local.wait_for_notices({key}, timeout)
    local.wait_for_notices({"(late duplicates)"}, 2)
    return [r for r in local.notices if r.notice["source"]["key"] == key]


def distinct(received: list[Received]) -> list[dict[str, Any]]:
    """Notices by notice_id: SNS (and a publish whose answer was lost) may deliver one twice, never two different ones."""
    return list({r.notice["notice_id"]: r.notice for r in received}.values())


# Each rule makes one AWS call fail the way a caller sees it once botocore's own retries are spent (or
# succeed with its answer lost). Today's main turns most of these into a paid video reported as failed.
ONE_FAULT = [
    "*:sns.Publish:once",
    "*:s3.UploadPart:once",
    "*:s3.CompleteMultipartUpload:lost-once",  # the crash right after the upload completed
    "StoreFunction:s3.CompleteMultipartUpload:exit-once",  # Store's runtime killed right after it (Runtime.ExitError)
    "*:s3.PutObject:once",  # the manifest
    "*:dynamodb.PutItem:once",  # an idempotency record
    "*:dynamodb.UpdateItem:once",
    "*:secretsmanager.GetSecretValue:once",
    "*:stepfunctions.StartExecution:lost-once",
    "*:stepfunctions.SendTaskSuccess:lost-once",
    "*:stepfunctions.DescribeExecution:once",
    "*:s3.ListObjectsV2:once",
    "*:s3.GetObject:once",
    "*:s3.PutObjectTagging:always",  # tagging is a courtesy: it never changes the outcome
    "*:events.PutEvents:once",  # a job event: news about the job, never part of it
    "*:events.PutEvents:lost-once",
    "*:events.PutEvents:always",  # the notice still goes out, once
]


@pytest.mark.parametrize("rule", ONE_FAULT)
def test_a_passing_aws_fault_never_fails_a_paid_video_nor_doubles_its_notice(rule: str) -> None:
    with pipeline(rule) as local:
        received = one_job(local, "incoming/f/sea.jpg")
        fired = sum(local.faults.fired.values())
        downloads = sum(task.downloads for task in local.emulator.tasks.values())
    notices = distinct(received)
    assert fired >= 1, f"{rule} never fired: the test proves nothing"
    assert [n["event"] for n in notices] == ["video.succeeded"], [n.get("error") for n in notices]
    assert len(local.emulator.submissions) == 1, "paid twice"
    if rule in ("*:s3.PutObject:once", "*:s3.CompleteMultipartUpload:lost-once", "StoreFunction:s3.CompleteMultipartUpload:exit-once"):
        assert downloads == 1, "a video already stored was fetched again"


def test_a_publish_whose_answer_is_lost_never_yields_a_contradicting_notice() -> None:
    with pipeline("*:sns.Publish:lost-once") as local:
        received = one_job(local, "incoming/f/lost.jpg")
    assert received, "no notice at all"
    assert {r.notice["notice_id"] for r in received} == {received[0].notice["job_id"] + ":succeeded"}
    assert {json.dumps(r.notice, sort_keys=True) for r in received} == {json.dumps(received[0].notice, sort_keys=True)}


def test_when_sns_is_down_past_every_retry_the_backstop_sends_the_one_notice_later() -> None:
    # PublishNotice makes 9 attempts; the 10th publish (the backstop's) goes through
    with pipeline("PublishFunction:sns.Publish:times=9", time_scale=0.05) as local:
        received = one_job(local, "incoming/f/down.jpg", timeout=120)
        runs = local.sfn.list_executions(stateMachineArn=local.stack.id("VideoJobStateMachine"))["executions"]
    assert [n["event"] for n in distinct(received)] == ["video.succeeded"]
    assert [run["status"] for run in runs] == ["FAILED"]  # the execution could not notify; the backstop did


def test_when_sns_never_recovers_the_job_is_kept_for_operators() -> None:
    with pipeline("PublishFunction:sns.Publish:always", time_scale=0.05) as local:
        local.upload("incoming/f/never.json", SIDECAR)
        local.upload("incoming/f/never.jpg", jpeg_bytes())
        queue = local.stack.id("BackstopFailureQueue")
        kept: list[dict[str, Any]] = []
        for _ in range(600):
            kept += local.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if kept:
                break
            local.wait_for_notices({"(nothing)"}, 0.2)
    assert kept, "the backstop's failure reached no queue: the alarm on it would never fire"
    assert "never.jpg" in json.loads(kept[0]["Body"])["requestPayload"]["detail"]["input"]
    assert local.notices == []


def test_throttled_polls_wait_in_the_state_machine_not_in_the_function() -> None:
    # A long Retry-After used to be slept inside Poll, which then timed out; now the Wait state honours it.
    with pipeline("", faults="429=0.5,retry_after=40,seed=4", time_scale=0.05, emulator_scale=0.05) as local:
        received = one_job(local, "incoming/f/busy.jpg", timeout=120)
        throttled = local.emulator.requests_seen["throttled"]
    assert throttled > 0
    assert [n["event"] for n in distinct(received)] == ["video.succeeded"]
    assert len(local.emulator.submissions) == 1


def test_lambda_throttling_the_state_machines_steps_never_fails_a_job() -> None:
    # Given Poll, Store and Publish each refused beyond one invocation at a time (as an account's quota, or a
    # reservation, refuses them), and four jobs at once
    config = EmulatorConfig(api_key=API_KEY, **FAST)
    images = {f"incoming/t/{index}.jpg" for index in range(4)}
    one_each = {"PollFunction": 1, "StoreFunction": 1, "PublishFunction": 1}
    with LocalPipeline(emulator_config=config, function_concurrency=one_each, time_scale=0.05) as local:
        for key in sorted(images):
            local.upload(key.replace(".jpg", ".json"), SIDECAR)
            local.upload(key, jpeg_bytes())
        received = local.wait_for_notices(images, 180)
        throttled = sum(local.functions.throttled.values())
    # Then every job succeeds once, paid once, though Lambda refused invocations on the way
    assert throttled > 0, "nothing was throttled: the test proves nothing"
    assert sorted(n["event"] for n in distinct(received)) == ["video.succeeded"] * 4
    assert len(local.emulator.submissions) == 4


def test_a_closed_pipeline_leaves_nothing_running_that_reaches_the_next_one() -> None:
    """A job whose notice kept failing was still retrying in this process when its pipeline closed; a minute later it
    published video.failed into the next pipeline's topic (same names, same ARNs), a notice for a job it never had."""
    with pipeline("PublishFunction:sns.Publish:always") as first:
        first.upload("incoming/left.json", SIDECAR)
        first.upload("incoming/left.jpg", jpeg_bytes())
        assert wait_until(
            lambda: [first.functions.invocations["PublishFunction"]] if first.functions.invocations["PublishFunction"] else [], 120
        )
        assert execution_threads()  # its execution is retrying the notice
    assert not execution_threads()  # stopped with the pipeline, as deleting a stack stops its executions
    with pipeline("") as second:
        second.wait_for_notices({"incoming/left.jpg"}, 5)  # a window to look in: the old retry came back within seconds
        assert second.notices == []
