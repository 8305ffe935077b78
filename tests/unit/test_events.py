"""The sample events in events/ (for `sam local invoke <Function> -e events/<file>.json`) are the shapes the handlers take.

Each file is read the way its handler reads it: the UploadQueue records through accept.triggers_from_body, the
SubmitQueue record through submit.SubmitRequest, the state machine's inputs through jobs.ExecutionState (with
Powertools' parser, as the handlers do), the EventBridge event as the backstop reads it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import parse
from img2video.core.batch import is_manifest, line_fields
from img2video.core.failure import notice_for_ended_execution, notice_for_failed_state
from img2video.core.jobs import ExecutionState, Job, job_id
from img2video.steps.accept import Trigger, triggers_from_body
from img2video.steps.batch import Batch
from img2video.steps.submit import SubmitRequest
from img2video_local.template import REPO_ROOT, load_template

EVENTS = REPO_ROOT / "events"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return data


def bodies(name: str) -> list[str]:
    """The SQS record bodies of an SQS event file, each checked to be an SQS record."""
    records = load(name)["Records"]
    assert records and all(r["eventSource"] == "aws:sqs" and int(r["attributes"]["ApproximateReceiveCount"]) >= 1 for r in records)
    return [r["body"] for r in records]


def queue_of(name: str) -> str:
    return str(load(name)["Records"][0]["eventSourceARN"])


# -- AcceptFunction (UploadQueue) ----------------------------------------------------------------------------
def test_s3_puts_decode_to_the_keys_users_uploaded() -> None:
    [image] = triggers_from_body(bodies("accept_s3_put_image.json")[0])
    [sidecar] = triggers_from_body(bodies("accept_s3_put_sidecar.json")[0])
    # S3 writes keys URL-encoded with + for spaces: decoded exactly once
    assert (image.key, sidecar.key) == ("incoming/a/my cat.jpg", "incoming/a/my cat.json")
    assert image.bucket == sidecar.bucket and image.attempt == 0 and image.reason == "s3"
    assert image.first_seen == pytest.approx(1795521600.0)  # the eventTime, 2026-11-24T12:00:00Z


def test_an_existing_buckets_eventbridge_upload_keeps_its_key_as_stored() -> None:
    """EventBridge's "Object Created" carries the key as stored (AWS's captured events show "/" and ":" as they are),
    unlike an S3 notification's URL-encoded key: a "+" in it is a plus, never a space."""
    [image] = triggers_from_body(bodies("accept_eventbridge_object_created.json")[0])
    assert (image.bucket, image.key, image.reason) == ("my-existing-photos", "incoming/a/my cat+dog.jpg", "s3")
    assert image.first_seen == pytest.approx(1795521600.0)  # the event's time, 2026-11-24T12:00:00Z
    assert "UploadQueue" in queue_of("accept_eventbridge_object_created.json")


def test_the_s3_test_event_starts_nothing() -> None:
    assert triggers_from_body(bodies("accept_s3_test_event.json")[0]) == []


def test_the_accept_functions_own_recheck_is_a_trigger_of_the_same_image() -> None:
    [recheck] = triggers_from_body(bodies("accept_recheck.json")[0])
    [image] = triggers_from_body(bodies("accept_s3_put_image.json")[0])
    assert recheck == Trigger(bucket=image.bucket, key=image.key, first_seen=image.first_seen, attempt=0, reason="await-sidecar")


def test_accept_events_come_from_the_upload_queue() -> None:
    for name in ("accept_s3_put_image.json", "accept_s3_put_sidecar.json", "accept_s3_test_event.json", "accept_recheck.json"):
        assert "UploadQueue" in queue_of(name), name


# -- SubmitFunction (SubmitQueue) -----------------------------------------------------------------------------
def test_the_submit_message_is_what_submit_to_novita_sends() -> None:
    [body] = bodies("submit_message.json")
    assert "SubmitQueue" in queue_of("submit_message.json")
    request = parse(event=body, model=SubmitRequest)  # type: ignore[call-overload]  # as the handler does: the body is a str
    asl = json.loads((REPO_ROOT / "statemachine/video_job.asl.json").read_text(encoding="utf-8"))
    sent = asl["States"]["SubmitToNovita"]["Parameters"]["MessageBody"]
    assert set(json.loads(body)) == {key.removesuffix(".$") for key in sent}  # token, execution, job
    assert request.attempt == 0 and request.token
    assert request.execution.rsplit(":", 1)[1] == request.job.job_id  # the execution is named after its job


# -- the state machine's inputs: PollFunction, StoreFunction, PublishFunction --------------------------------
def state(name: str) -> ExecutionState:
    return parse(event=load(name), model=ExecutionState)


def test_the_poll_input_is_a_submitted_job_still_running() -> None:
    polled = state("poll_input.json")
    assert polled.submitted is not None and polled.submitted.task_id and polled.poll.status != "succeeded"
    assert polled.error is None and polled.stored is None


def test_the_store_input_is_a_finished_task() -> None:
    finished = state("store_input.json")
    assert finished.submitted is not None and finished.poll.status == "succeeded" and finished.poll.finished_at
    assert finished.stored is None


def test_the_publish_input_is_a_caught_failure_with_its_notice() -> None:
    caught = state("publish_input.json")
    notice = notice_for_failed_state(caught)
    assert notice.error is not None and (notice.error.code, notice.error.stage) == ("PROVIDER_FAILED", "poll")
    assert "content moderation" in notice.error.message and notice.task_id == caught.task_id


def test_the_backstop_event_is_what_the_backstop_rule_delivers() -> None:
    event = load("publish_backstop_event.json")
    rule = load_template()["Resources"]["PublishFunction"]["Properties"]["Events"]["Backstop"]["Properties"]["Pattern"]
    assert [event["source"]] == rule["source"] and [event["detail-type"]] == rule["detail-type"]
    assert event["detail"]["status"] in rule["detail"]["status"]
    started = json.loads(event["detail"]["input"])  # the input Accept started the execution with
    assert set(started) == {"job", "accepted_at", "submit_window_seconds"}
    job = Job.model_validate(started["job"])
    assert event["detail"]["name"] == job.job_id and event["detail"]["executionArn"].endswith(f":{job.job_id}")
    notice = notice_for_ended_execution(job, event["detail"])
    assert notice.error is not None and notice.error.code == "CANCELLED"  # the sample is a stopped execution


# -- one job throughout -----------------------------------------------------------------------------------
def test_every_sample_is_the_same_job_and_its_id_is_the_one_accept_computes() -> None:
    jobs = [SubmitRequest.model_validate_json(bodies("submit_message.json")[0]).job]
    jobs += [state(name).job for name in ("poll_input.json", "store_input.json", "publish_input.json")]
    jobs.append(Job.model_validate(json.loads(load("publish_backstop_event.json")["detail"]["input"])["job"]))
    assert all(job == jobs[0] for job in jobs)
    job = jobs[0]
    [image] = triggers_from_body(bodies("accept_s3_put_image.json")[0])
    assert (job.source.bucket, job.source.key) == (image.bucket, image.key)
    assert job.sidecar is not None
    [sidecar] = triggers_from_body(bodies("accept_s3_put_sidecar.json")[0])
    marker = f"{int(image.first_seen)}:{int(sidecar.first_seen)}"  # both objects' LastModified: their upload times
    assert job.job_id == job_id(image.bucket, image.key, job.source.etag, job.sidecar.key, job.sidecar.etag, "my cat", marker)
    s3 = json.loads(bodies("accept_s3_put_image.json")[0])["Records"][0]["s3"]["object"]
    assert s3["eTag"] == job.source.etag


def test_every_file_in_events_is_covered_here() -> None:
    covered = {
        "accept_s3_put_image.json",
        "accept_s3_put_sidecar.json",
        "accept_s3_test_event.json",
        "accept_eventbridge_object_created.json",
        "accept_recheck.json",
        "submit_message.json",
        "poll_input.json",
        "store_input.json",
        "publish_input.json",
        "publish_backstop_event.json",
        "webhook_task_result.json",
        "batch_read.json",
        "batch_lines.json",
    }
    assert {path.name for path in EVENTS.glob("*.json")} == covered


# -- WebhookFunction (its Function URL) ---------------------------------------------------------------------
def test_the_webhook_event_is_a_function_url_call_with_novitas_task_result() -> None:
    event = load("webhook_task_result.json")
    assert event["version"] == "2.0" and event["requestContext"]["http"]["method"] == "POST"
    body = json.loads(event["body"])
    assert body["event_type"] == "ASYNC_TASK_RESULT" and body["payload"]["task"]["status"] == "TASK_STATUS_SUCCEED"
    # the path is a placeholder: with the real secret the call is confirmed with the Task Result API; without it, 404
    assert "REPLACE" in event["rawPath"]


# -- BatchFunction (the batches' state machine) ----------------------------------------------------------------
def test_the_batch_steps_inputs_name_their_manifest_and_lines() -> None:
    read, lines = load("batch_read.json"), load("batch_lines.json")
    assert (read["step"], lines["step"]) == ("read", "lines")
    batch = Batch.model_validate(read["batch"])
    assert is_manifest(batch.manifest.key) and batch.attempt == 1 and Batch.model_validate(lines["batch"]) == batch
    image, fields = line_fields(lines["lines"][0]["text"], 1)
    assert (image, fields["prompt"]) == ("cat.jpg", "The cat yawns") and lines["lines"][1]["problem"].startswith("line 2 ")
