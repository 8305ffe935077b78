"""Publish: the job's one notice, from the state machine or the EventBridge backstop."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any
from unittest import mock

import pytest
import responses
from botocore.exceptions import ClientError
from img2video.aws import idempotency, s3_objects, slot_line
from img2video.core.jobs import ExecutionState
from img2video.steps import publish
from img2video_local.aws_faults import Invocation, install_hooks, running, sample_short_polls, uninstall_hooks
from img2video_local.template import REGION

from tests.conftest import Aws, jpeg_bytes
from tests.unit.steps.support import (
    FULL,
    JOB_ID,
    RESULT_URL,
    SUBMIT_URL,
    VIDEO,
    VIDEO_URL,
    Answers,
    _line_length,
    _queued,
    _task_ends,
    accept,
    accepted_job,
    assert_presigned,
    aws_error,
    executions,
    failed,
    failing,
    invoke,
    job_dict,
    now_iso,
    put,
    result,
    state_dict,
    store,
    submit,
    submit_body,
    tags,
)


def publish_state(aws: Aws, **overrides: Any) -> dict[str, Any]:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    return state_dict(job_dict(aws.input_bucket, tags={"team": "cats"}), **overrides)


def publish_(aws: Aws, event: dict[str, Any]) -> dict[str, Any]:
    return invoke(aws, "PublishFunction", event)  # type: ignore[no-any-return]


def test_a_stored_job_gets_one_success_notice_with_a_sigv4_link(aws: Aws, stored_state: dict[str, Any]) -> None:
    assert publish_(aws, stored_state) == {"notice_id": f"{JOB_ID}:succeeded"}
    [notice] = aws.notices()
    assert notice["event"] == "video.succeeded" and notice["error"] is None and notice["task_id"] == "task-1"
    assert notice["video"]["key"] == "videos/cat.mp4" and notice["video"]["size_bytes"] == len(VIDEO)
    assert notice["video"]["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert_presigned(notice["video"]["url"], aws.output_bucket, "videos/cat.mp4")
    assert notice["tags"] == {"team": "cats"} and notice["request"]["prompt"] == "p"
    assert notice["_subject"] == "Video ready: cat.mp4" and notice["_attributes"]["event"] == "video.succeeded"
    assert tags(aws, "incoming/cat.jpg") == {"img2video-status": "succeeded", "img2video-job": JOB_ID}


FAILED_STATES = [
    (failed("poll", "ProviderTimeout", "the task was not finished after 30 minutes"), "PROVIDER_TIMEOUT", "not finished after 30 minutes"),
    (failed("poll", "ProviderFailed", "Novita could not generate the video: nsfw"), "PROVIDER_FAILED", "nsfw"),
    (failed("store", "DownloadFailed", "refused to download the video over http"), "DOWNLOAD_FAILED", "over http"),
    ({"stage": "submit", "error": {"Error": "States.Timeout", "Cause": ""}}, "PROVIDER_FAILED", "within the submit window"),
    ({"stage": "poll", "error": {"Error": "Lambda.Unknown", "Cause": "RequestId: x Task timed out"}}, "INTERNAL", "timed out"),
]


def test_a_failed_state_gets_one_failure_notice_with_its_code_and_stage(aws: Aws) -> None:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    for index, (failure, code, message) in enumerate(FAILED_STATES):
        job_id = f"cat-{index:010d}"
        state = state_dict(job_dict(aws.input_bucket, job_id=job_id, tags={"team": "cats"}), **failure)
        assert publish_(aws, state) == {"notice_id": f"{job_id}:failed"}
        [notice] = aws.notices()
        assert notice["event"] == "video.failed" and notice["video"] is None and notice["job_id"] == job_id
        assert notice["error"]["code"] == code and notice["error"]["stage"] == failure["stage"], (failure, notice["error"])
        assert message in notice["error"]["message"] and "RequestId" not in notice["error"]["message"], notice["error"]
        assert notice["task_id"] == "task-1" and notice["request"]["prompt"] == "p" and notice["tags"] == {"team": "cats"}
        assert notice["_subject"] == f"Video failed ({code}): cat.jpg"
        assert tags(aws, "incoming/cat.jpg") == {"img2video-status": "failed", "img2video-job": job_id}


def test_publishing_twice_sends_one_notice(aws: Aws) -> None:
    state = publish_state(aws, **failed("poll", "ProviderFailed", "no"))
    first = publish.publish_for_state(ExecutionState.model_validate(state))
    second_answer = publish_(aws, state)
    assert second_answer == {"notice_id": first.notice_id}
    [notice] = aws.notices()
    assert notice == {**json.loads(first.model_dump_json()), "_attributes": notice["_attributes"], "_subject": notice["_subject"]}


def test_a_failure_after_a_success_of_the_same_job_changes_nothing(aws: Aws, stored_state: dict[str, Any]) -> None:
    first = publish_(aws, stored_state)
    [success] = aws.notices()
    late = {**stored_state, **failed("store", "DownloadFailed", "late Catch"), "stored": None}
    assert publish_(aws, late) == first == {"notice_id": f"{JOB_ID}:succeeded"}
    assert publish_(aws, stored_state) == first
    assert aws.notices() == []  # nothing new, the subscriber keeps the one success
    assert success["event"] == "video.succeeded"
    assert tags(aws, "incoming/cat.jpg")["img2video-status"] == "succeeded"
    # and the decided notice is the first one, word for word
    decided = publish.publish_for_state(ExecutionState.model_validate(publish_state(aws, **failed("poll", "ProviderFailed", "x"))))
    assert decided.model_dump(mode="json") == {k: v for k, v in success.items() if not k.startswith("_")}


def backstop_event(aws: Aws, state: dict[str, Any] | None, status: str, **detail: Any) -> dict[str, Any]:
    """EventBridge's "Step Functions Execution Status Change" event, as the Backstop rule delivers it."""
    arn = f"arn:aws:states:{REGION}:123456789012:execution:img2video-jobs-00000000-0000-4000-8000-000000000000:{JOB_ID}"
    return {
        "version": "0",
        "id": "e-1",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": "123456789012",
        "time": now_iso(),
        "region": REGION,
        "resources": [arn],
        "detail": {
            "executionArn": arn,
            "stateMachineArn": aws.stack.id("VideoJobStateMachine"),
            "name": JOB_ID,
            "status": status,
            "input": json.dumps(state) if state is not None else None,
            "error": None,
            "cause": None,
            **detail,
        },
    }


def test_a_warm_function_logs_a_job_id_only_on_that_jobs_lines(aws: Aws, logged: io.StringIO) -> None:
    """The job id comes and goes with its job: the backstop's next event in the same container, one without a job, logs
    none (it carried the last job's id, pointing whoever read the alarm at the wrong job)."""
    state = publish_state(aws, **failed("poll", "ProviderFailed", "x"))
    publish_(aws, state)
    [published] = [line for line in _log_lines(logged) if line["message"] == "Published notice"]
    assert published["job_id"] == JOB_ID
    assert publish_(aws, backstop_event(aws, {}, "FAILED")) == {"notice_id": None}
    [no_job] = [line for line in _log_lines(logged) if line["message"].startswith("An ended execution carries no job")]
    assert "job_id" not in no_job


def _log_lines(logged: io.StringIO) -> list[dict[str, Any]]:
    """The lines logged since the last look (not the metrics' lines)."""
    text, _ = logged.getvalue(), logged.truncate(0)
    logged.seek(0)
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if "message" in line]


def test_backstop_sends_cancelled_when_a_stopped_execution_had_no_notice(aws: Aws) -> None:
    state = {"job": job_dict(aws.input_bucket), "accepted_at": now_iso(), "submit_window_seconds": 86400}
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    assert publish_(aws, backstop_event(aws, state, "ABORTED")) == {"notice_id": f"{JOB_ID}:failed"}
    [notice] = aws.notices()
    assert notice["error"]["code"] == "CANCELLED" and notice["error"]["stage"] == "notify"
    assert tags(aws, "incoming/cat.jpg")["img2video-status"] == "failed"


def test_backstop_sends_the_failure_when_a_failed_execution_had_no_notice(aws: Aws) -> None:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    cases = [
        (
            "FAILED",
            {"error": "States.Runtime", "cause": "An error occurred while executing the state 'PublishNotice'"},
            "state 'PublishNotice'",
        ),
        ("TIMED_OUT", {}, "ran past its time limit"),
    ]
    for index, (status, extra, fragment) in enumerate(cases):
        job = job_dict(aws.input_bucket, job_id=f"cat-{index:010d}")
        answer = publish_(aws, backstop_event(aws, {"job": job, "accepted_at": now_iso()}, status, **extra))
        assert answer == {"notice_id": f"{job['job_id']}:failed"}
        [notice] = aws.notices()
        assert notice["event"] == "video.failed" and notice["error"]["code"] == "INTERNAL", status
        assert fragment in notice["error"]["message"] and notice["error"]["stage"] == "notify", notice["error"]


def test_backstop_adds_nothing_when_the_job_already_has_its_notice(aws: Aws) -> None:
    state = publish_state(aws, **failed("poll", "ProviderFailed", "nsfw"))
    publish_(aws, state)
    [notice] = aws.notices()
    # the failed job then ends in its Fail state: EventBridge reports the execution FAILED
    answer = publish_(
        aws, backstop_event(aws, state, "FAILED", error="JobFailed", cause="The job failed; its video.failed notice was published.")
    )
    assert answer == {"notice_id": notice["notice_id"]} and aws.notices() == []


def test_backstop_sends_the_success_when_the_video_was_stored_but_never_announced(aws: Aws, stored_state: dict[str, Any]) -> None:
    # e.g. SNS stayed down through every PublishNotice retry: the execution failed with the video in S3
    answer = publish_(aws, backstop_event(aws, stored_state, "FAILED", error="AwsTransient", cause="{}"))
    assert answer == {"notice_id": f"{JOB_ID}:succeeded"}
    [notice] = aws.notices()
    assert notice["event"] == "video.succeeded" and notice["video"]["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert_presigned(notice["video"]["url"], aws.output_bucket, "videos/cat.mp4")


def test_backstop_reads_the_input_from_the_execution_when_the_event_has_none(aws: Aws) -> None:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    state = {"job": job_dict(aws.input_bucket), "accepted_at": now_iso()}
    arn = aws.sfn.start_execution(stateMachineArn=aws.stack.id("VideoJobStateMachine"), name=JOB_ID, input=json.dumps(state))[
        "executionArn"
    ]
    aws.sfn.stop_execution(executionArn=arn)
    event = backstop_event(aws, None, "ABORTED", executionArn=arn)
    del event["detail"]["input"]
    publish_(aws, event)
    [notice] = aws.notices()
    assert notice["error"]["code"] == "CANCELLED" and notice["job_id"] == JOB_ID


def test_backstop_ignores_an_execution_without_a_job(aws: Aws) -> None:
    assert publish_(aws, backstop_event(aws, {"something": "else"}, "FAILED")) == {"notice_id": None}
    assert aws.notices() == []


def test_a_tag_never_goes_back(aws: Aws, stored_state: dict[str, Any]) -> None:
    aws.s3.put_object_tagging(
        Bucket=aws.input_bucket, Key="incoming/cat.jpg", Tagging={"TagSet": [{"Key": "owner", "Value": "me"}]}
    )  # the user's own tag survives every update
    publish_(aws, stored_state)
    s3_objects.tag_source(aws.input_bucket, "incoming/cat.jpg", "queued", JOB_ID)  # e.g. a late duplicate upload event
    s3_objects.tag_source(aws.input_bucket, "incoming/cat.jpg", "submitted", JOB_ID)
    assert tags(aws, "incoming/cat.jpg") == {"owner": "me", "img2video-status": "succeeded", "img2video-job": JOB_ID}
    # a new job of the same image (e.g. a changed sidecar) does start from "queued"
    s3_objects.tag_source(aws.input_bucket, "incoming/cat.jpg", "queued", "cat-newer")
    assert tags(aws, "incoming/cat.jpg") == {"owner": "me", "img2video-status": "queued", "img2video-job": "cat-newer"}


def test_a_late_duplicate_upload_event_after_success_keeps_the_success_tag(aws: Aws, public_dns: None) -> None:
    _, job = accepted_job(aws)
    state = state_dict(job, poll={"status": "succeeded", "polls": 1, "finished_at": now_iso()})
    with responses.RequestsMock() as novita:
        novita.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
        novita.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
        state["stored"] = store(aws, state)
    publish_(aws, state)
    assert tags(aws, "incoming/a/cat.jpg")["img2video-status"] == "succeeded"
    accept(aws, "incoming/a/cat.jpg")  # S3 delivers the image's event once more
    assert tags(aws, "incoming/a/cat.jpg") == {"img2video-status": "succeeded", "img2video-job": job["job_id"]}
    assert len(executions(aws)) == 1 and len(aws.notices()) == 1


def test_a_tagging_failure_never_fails_the_notice(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    for index, broken in enumerate(["get_object_tagging", "put_object_tagging"]):
        with monkeypatch.context() as patch:
            failing(patch, "s3", broken, aws_error("AccessDenied", 403, broken))
            state = state_dict(job_dict(aws.input_bucket, job_id=f"cat-{index:010d}"), **failed("poll", "ProviderFailed", "no"))
            assert publish_(aws, state) == {"notice_id": f"cat-{index:010d}:failed"}
        assert len(aws.notices()) == 1, broken


def test_a_missing_image_does_not_stop_the_notice(aws: Aws) -> None:
    state = state_dict(job_dict(aws.input_bucket), **failed("poll", "ProviderFailed", "no"))  # the image was deleted meanwhile
    assert publish_(aws, state) == {"notice_id": f"{JOB_ID}:failed"}
    assert len(aws.notices()) == 1


def test_a_passing_sns_fault_is_raised_as_aws_transient_and_the_retry_sends_the_one_notice(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from img2video.core.errors import AwsTransient

    state = publish_state(aws, **failed("poll", "ProviderFailed", "no"))
    failing(monkeypatch, "sns", "publish", aws_error("ThrottledException", 400, "Publish"), times=1)
    with pytest.raises(AwsTransient):  # the name PublishNotice's Retry lists
        publish_(aws, state)
    assert aws.notices() == []
    assert publish_(aws, state) == {"notice_id": f"{JOB_ID}:failed"}
    assert len(aws.notices()) == 1


@responses.activate
def test_a_throttled_submit_whose_record_could_not_be_removed_is_not_held_off(aws: Aws, answers: Answers) -> None:
    # chaos found it: Novita answers 429, and DynamoDB then fails to delete the in-progress record. That record
    # held every retry off for the Submit timeout (15 minutes); the record is removed again and the 429 honoured.
    responses.post(SUBMIT_URL, status=429, json={"reason": "RATE_LIMIT_EXCEEDED", "message": "busy"}, headers={"Retry-After": "3"})
    execution, job = accepted_job(aws, key="incoming/held.jpg")
    body = submit_body(execution, job)
    store = idempotency.idempotency_store("img2video-submit")
    real_delete = store._delete_record
    failures = iter([ClientError({"Error": {"Code": "ThrottlingException"}}, "DeleteItem")])

    def flaky_delete(data_record: Any) -> None:
        for failure in failures:
            raise failure
        real_delete(data_record=data_record)

    with mock.patch.object(store, "_delete_record", side_effect=flaky_delete):
        assert submit(aws, body) == {"batchItemFailures": []}
    [(again, delay)] = answers.resent
    assert delay >= 3, "the provider's Retry-After was lost"
    responses.upsert(responses.POST, SUBMIT_URL, json={"task_id": "t-not-held"})
    assert submit(aws, again) == {"batchItemFailures": []}
    assert [o.task_id for o in answers.outputs] == ["t-not-held"]


def test_an_extra_image_whose_key_would_pass_s3s_limit_is_refused_not_looked_up(aws: Aws) -> None:
    """S3 answers a HEAD of a key over 1,024 bytes with 400 (KeyTooLongError), not 404: never ask it."""
    folder = "incoming/" + "f" * 800 + "/"
    put(aws, folder + "cat.json", json.dumps({"prompt": "p", "extra_images": ["d" * 300 + ".jpg"]}))
    put(aws, folder + "cat.jpg", jpeg_bytes())
    accept(aws, folder + "cat.jpg")
    [notice] = aws.notices()
    assert notice["error"]["code"] == "INVALID_SIDECAR" and "its key at most 1024 bytes" in notice["error"]["message"]
    assert executions(aws) == []


@responses.activate
@pytest.mark.usefixtures("own_retries_not_due")
def test_a_task_end_finds_the_job_in_line_even_when_sqs_short_polls_come_back_empty(aws: Aws, answers: Answers) -> None:
    # SQS documents that a short poll of a queue holding few messages may return none while they wait; moto always
    # returned them. A task end that read an empty line left its slot to the job's backoff (up to 900 s).
    responses.post(SUBMIT_URL, status=429, json=FULL)
    execution, job = accepted_job(aws, key="incoming/waiting.jpg")
    body = submit_body(execution, job)
    assert submit(aws, body) == {"batchItemFailures": []}
    assert _line_length(aws) == 1
    install_hooks()
    sample_short_polls(1.0)  # every short poll a function makes comes back empty
    try:
        with running(Invocation("PollFunction", "req-wake")):
            _task_ends(aws)
    finally:
        sample_short_polls(0)
        uninstall_hooks()
    assert _queued(aws, "SubmitQueue") == [{**body, "attempt": 1, "in_line": False, "woken": True}]


@responses.activate
def test_a_task_end_with_nobody_in_line_returns_at_once_without_a_long_poll(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    # a poll that sees its task end must not wait a second for a line that is empty: its job's Store would start later
    polls: list[dict[str, Any]] = []
    real_client = slot_line.quick_client

    def recording_client(service: str, waits: int = 0) -> Any:
        client = real_client(service, waits=waits)
        if service == "sqs":
            receive = client.receive_message
            client.receive_message = lambda **kwargs: polls.append(kwargs) or receive(**kwargs)
        return client

    monkeypatch.setattr(slot_line, "quick_client", recording_client)
    _task_ends(aws)
    assert polls and not [p for p in polls if p.get("WaitTimeSeconds")]
