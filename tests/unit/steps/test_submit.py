"""Submit: the job's one paid call to Novita, the daily limit, throttling and the line for task slots."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import responses
from img2video.aws import jobs_table, slot_line
from img2video.core.errors import ProviderFailed
from img2video.steps import submit as submit_module
from img2video_local.template import REGION

from tests.conftest import API_KEY, Aws, bomb_png, jpeg_bytes
from tests.unit.steps.support import (
    FULL,
    RESULT_URL,
    SUBMIT_URL,
    Answers,
    _line_length,
    _queued,
    _task_ends,
    accept,
    accepted_job,
    assert_presigned,
    aws_error,
    execution_input,
    executions,
    failing,
    invoke,
    novita_calls,
    poll,
    put,
    result,
    spy,
    state_dict,
    submit,
    submit_body,
)


@responses.activate
def test_one_post_with_a_presigned_image_then_the_task_is_answered(aws: Aws, answers: Answers) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-1"})
    execution, job = accepted_job(aws)

    assert submit(aws, submit_body(execution, job)) == {"batchItemFailures": []}

    [call] = novita_calls(SUBMIT_URL)
    assert call.request.method == "POST" and call.request.headers["Authorization"] == f"Bearer {API_KEY}"
    sent = json.loads(call.request.body)
    assert sent["prompt"] == "a cat yawns" and sent["resolution"] == "1080p" and sent["duration"] == 5
    assert sent["off_peak"] is False and "tags" not in sent and "extra_images" not in sent
    [image] = sent["images"]
    assert_presigned(image, aws.input_bucket, "incoming/a/cat.jpg")
    assert "X-Amz-Expires=3600" in image

    [token] = [c.kwargs["taskToken"] for c in answers.success.call_args_list]
    [output] = answers.outputs
    assert token == "token-1" and output.task_id == "task-1"
    assert output.deadline == pytest.approx(time.time() + 30 * 60, abs=30)
    assert output.first_poll.status == "submitted" and output.first_poll.polls == 0 and output.first_poll.wait_seconds == 5
    assert answers.failures == [] and answers.resent == [] and aws.notices() == []


@responses.activate
def test_keys_with_unicode_and_spaces_are_presigned_for_the_exact_key(aws: Aws, answers: Answers) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-u"})
    execution, job = accepted_job(aws, key="incoming/my photos/été + 100%.jpg")
    submit(aws, submit_body(execution, job))
    [image] = json.loads(novita_calls(SUBMIT_URL)[0].request.body)["images"]
    assert_presigned(image, aws.input_bucket, "incoming/my photos/été + 100%.jpg")


@responses.activate
def test_off_peak_images_travel_inline_not_as_expiring_urls(aws: Aws, answers: Answers) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t-night"})
    execution, job = accepted_job(aws, {"prompt": "p", "off_peak": True}, key="incoming/night.jpg")
    submit(aws, submit_body(execution, job))
    [call] = novita_calls(SUBMIT_URL)
    sent = json.loads(call.request.body)
    assert sent["off_peak"] is True and sent["images"][0].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(sent["images"][0].split(",", 1)[1]) == jpeg_bytes()
    assert b"X-Amz-" not in call.request.body
    assert [o.task_id for o in answers.outputs] == ["t-night"]
    assert answers.outputs[0].deadline == pytest.approx(time.time() + 2880 * 60, abs=30)  # off-peak: up to 48 hours


@pytest.mark.parametrize("off_peak", [False, True], ids=["presigned-url", "inline"])
@responses.activate
def test_an_image_replaced_after_acceptance_is_not_paid_for(aws: Aws, answers: Answers, off_peak: bool) -> None:
    """Accepted, then overwritten (say with a 30000x30000 bomb) before its submit: the checked bytes are gone."""
    responses.post(SUBMIT_URL, json={"task_id": "never"})
    execution, job = accepted_job(aws, {"prompt": "p", "off_peak": off_peak}, key="incoming/swap.jpg")
    put(aws, "incoming/swap.jpg", bomb_png(30000, 30000))
    submit(aws, submit_body(execution, job))
    assert novita_calls(SUBMIT_URL) == []
    [(error, cause)] = answers.failures
    assert error == "UnsupportedImage" and "was replaced after it was accepted" in cause["errorMessage"]


@responses.activate
def test_a_retried_message_does_not_pay_again_and_still_answers_the_task(aws: Aws, answers: Answers) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-1"})
    execution, job = accepted_job(aws)
    body = submit_body(execution, job)
    submit(aws, body)
    assert submit(aws, body, receive_count=2) == {"batchItemFailures": []}  # e.g. the answer was lost, SQS delivered again

    assert len(novita_calls(SUBMIT_URL)) == 1
    first, second = answers.outputs
    assert first == second and first.task_id == "task-1"  # the same task, the same deadline
    assert [c.kwargs["taskToken"] for c in answers.success.call_args_list] == ["token-1", "token-1"]


@responses.activate
def test_a_message_for_an_execution_that_no_longer_runs_pays_nothing(aws: Aws, answers: Answers) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "never"})
    execution, job = accepted_job(aws)
    aws.sfn.stop_execution(executionArn=execution)  # e.g. an operator cancelled the job while it queued
    unknown = execution.rsplit(":", 1)[0] + ":no-such-job"
    for arn in (execution, unknown):
        assert submit(aws, submit_body(arn, job)) == {"batchItemFailures": []}, arn
    assert novita_calls() == [] and answers.outputs == [] and answers.failures == [] and answers.resent == []


@responses.activate
def test_a_throttled_submit_is_sent_again_later_honouring_retry_after(aws: Aws, answers: Answers) -> None:
    for index, (retry_after, least) in enumerate([("120", 120), ("7", 7), (None, 1)]):
        headers = {"Retry-After": retry_after} if retry_after else {}
        throttled = {"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": "too many"}
        responses.upsert(responses.POST, SUBMIT_URL, status=429, json=throttled, headers=headers)
        answers.sent.reset_mock()
        answers.success.reset_mock()
        execution, job = accepted_job(aws, key=f"incoming/busy{index}.jpg")
        body = submit_body(execution, job)

        assert submit(aws, body) == {"batchItemFailures": []}
        [(again, delay)] = answers.resent
        assert least <= delay <= 900, (retry_after, delay)
        assert again == {**body, "attempt": 1, "in_line": True, "woken": False}  # and it waits in the line for a slot, once
        assert answers.failures == [] and answers.outputs == [] and aws.notices() == []

        # Novita has room again: the message sent back submits (the throttled attempt left no idempotency record)
        responses.upsert(responses.POST, SUBMIT_URL, json={"task_id": f"t-after-{index}"})
        assert submit(aws, again) == {"batchItemFailures": []}
        assert [o.task_id for o in answers.outputs] == [f"t-after-{index}"]
    assert len(novita_calls(SUBMIT_URL)) == 6


@responses.activate
@pytest.mark.usefixtures("own_retries_not_due")
def test_a_job_turned_away_for_want_of_a_slot_goes_as_soon_as_a_task_ends_not_after_its_backoff(aws: Aws, answers: Answers) -> None:
    # burst found it: with backoff alone (up to 15 minutes), 500 jobs against 5 slots left slots idle for minutes
    responses.post(SUBMIT_URL, status=429, json=FULL)
    turned_away = []
    for name in ("first", "second", "done-meanwhile"):
        execution, job = accepted_job(aws, key=f"incoming/{name}.jpg")
        turned_away.append(submit_body(execution, job))
        assert submit(aws, turned_away[-1]) == {"batchItemFailures": []}
    assert len(answers.resent) == 3 and all(delay >= 1 for _, delay in answers.resent)  # each keeps its own retry
    # ... and a retry throttled again does not queue the job twice
    assert submit(aws, answers.resent[0][0]) == {"batchItemFailures": []}
    assert _line_length(aws) == 3
    assert _queued(aws, "SubmitQueue") == []  # ... which is not due yet
    jobs_table.record(turned_away[2]["job"]["job_id"], "submitted")  # its own retry got it a slot meanwhile

    _task_ends(aws)
    # the slot went to the first in line, now, marked as woken: it asks Novita whoever else waits
    woken = {"attempt": 1, "in_line": False, "woken": True}
    assert _queued(aws, "SubmitQueue") == [{**turned_away[0], **woken}]

    _task_ends(aws)  # the same task seen ended again (its webhook after the poll, a retried poll): its slot woke one
    assert _queued(aws, "SubmitQueue") == []
    responses.upsert(responses.GET, RESULT_URL, json=result("TASK_STATUS_FAILED", reason="nsfw"))  # a failed task frees its slot too
    failed = state_dict()
    failed["submitted"]["task_id"] = "task-2"
    with pytest.raises(ProviderFailed):
        poll(aws, failed)
    assert _queued(aws, "SubmitQueue") == [{**turned_away[1], **woken}]
    _task_ends(aws, "task-3")
    # the third had been submitted since: its entry is dropped, nobody is woken for it
    assert _queued(aws, "SubmitQueue") == [] and _queued(aws, "SlotLineQueue") == []


@responses.activate
@pytest.mark.usefixtures("own_retries_not_due")
def test_one_task_end_looks_past_the_entries_of_jobs_submitted_since_and_keeps_the_others_in_line(aws: Aws, answers: Answers) -> None:
    # burst found it: a look at two entries per task end fell behind the entries of jobs whose own retry had got a
    # slot, and the last jobs waited out their backoff while every slot stood idle
    responses.post(SUBMIT_URL, status=429, json=FULL)
    bodies = []
    for index in range(11):
        execution, job = accepted_job(aws, key=f"incoming/line{index:02d}.jpg")
        bodies.append(submit_body(execution, job))
        assert submit(aws, bodies[-1]) == {"batchItemFailures": []}
    for body in bodies[:8]:
        jobs_table.record(body["job"]["job_id"], "submitted")
    _task_ends(aws)
    [woken] = _queued(aws, "SubmitQueue")
    assert woken["job"]["job_id"] == bodies[8]["job"]["job_id"] and woken["woken"] is True
    # the eight stale entries are gone; the two still waiting are back in line at once, not hidden for a while
    assert sorted(b["job"]["job_id"] for b in _queued(aws, "SlotLineQueue")) == sorted(b["job"]["job_id"] for b in bodies[9:])


@responses.activate
@pytest.mark.usefixtures("own_retries_not_due")
def test_while_the_line_moves_a_job_waits_its_turn_and_asks_novita_once_per_patience(
    aws: Aws, answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # burst found it: every retry asked Novita on its backoff while the slots were full, about 6 429s a job, and the
    # woken jobs queued behind those retries on the SubmitQueue while slots stood idle
    patience = slot_line.patience(submit_module.get_settings())
    responses.post(SUBMIT_URL, status=429, json=FULL)
    execution, job = accepted_job(aws, key="incoming/ahead.jpg")
    assert submit(aws, submit_body(execution, job)) == {"batchItemFailures": []}
    assert answers.resent[0][1] < patience  # no line yet: a job Novita turned away asks again on its backoff
    _task_ends(aws)  # the line moves: the job ahead is woken
    [ahead] = _queued(aws, "SubmitQueue")

    execution, job = accepted_job(aws, key="incoming/behind.jpg")
    behind = submit_body(execution, job)
    assert submit(aws, behind) == {"batchItemFailures": []}
    assert len(novita_calls(SUBMIT_URL)) == 1  # it did not ask: others are waiting and being woken in turn
    [(retry, delay)] = answers.resent[1:]
    assert retry == {**behind, "attempt": 1, "in_line": True, "woken": False} and delay >= patience  # its own retry
    assert [b["job"]["job_id"] for b in _queued(aws, "SlotLineQueue")] == [job["job_id"]]

    # the woken job asks whoever waits; turned away all the same (another caller took the slot), it goes back in
    # line and adds no second retry of its own
    assert submit(aws, ahead) == {"batchItemFailures": []}
    assert len(novita_calls(SUBMIT_URL)) == 2 and len(answers.resent) == 2
    assert [b["woken"] for b in _queued(aws, "SlotLineQueue")] == [False]

    # a job in line asks when its own retry comes (a slot may have freed unseen), and, turned away while the line
    # still moves, waits a patience again rather than its backoff
    assert submit(aws, retry) == {"batchItemFailures": []}
    assert len(novita_calls(SUBMIT_URL)) == 3
    [(again, delay)] = answers.resent[2:]
    assert again == {**retry, "attempt": 2} and delay >= patience and _queued(aws, "SlotLineQueue") == []

    # the line stops (nobody woken for a patience: the slots went to another client, a wake was lost): a job not in
    # line asks Novita at once
    later = time.time() + patience + 1
    monkeypatch.setattr(slot_line, "now", lambda: later)
    responses.upsert(responses.POST, SUBMIT_URL, json={"task_id": "t-behind"})
    assert submit(aws, {**retry, "in_line": False}) == {"batchItemFailures": []}
    assert [o.task_id for o in answers.outputs] == ["t-behind"]


# status, Novita's answer, the error name SendTaskFailure carries, the notice's code, a fragment of the message
PERMANENT = [
    (
        400,
        {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": "images[0] unreachable"},
        "ProviderRejected",
        "PROVIDER_REJECTED",
        "unreachable",
    ),
    (
        400,
        {"code": 400, "reason": "BILLING_BALANCE_NOT_ENOUGH", "message": "top up"},
        "InsufficientBalance",
        "INSUFFICIENT_BALANCE",
        "top up",
    ),
    (
        403,
        {"code": 403, "reason": "INVALID_API_KEY", "message": f"invalid key {API_KEY}"},
        "ProviderAuth",
        "PROVIDER_AUTH",
        "invalid key ***",
    ),
]


@responses.activate
def test_a_permanent_provider_error_fails_the_task_with_its_name(aws: Aws, answers: Answers, logged: io.StringIO) -> None:
    for index, (status, answer, error, code, fragment) in enumerate(PERMANENT):
        responses.upsert(responses.POST, SUBMIT_URL, status=status, json=answer)
        answers.failure.reset_mock()
        execution, job = accepted_job(aws, key=f"incoming/no{index}.jpg")
        assert submit(aws, submit_body(execution, job, token=f"token-{index}")) == {"batchItemFailures": []}

        assert len(novita_calls(SUBMIT_URL)) == index + 1, error  # the secret holds the refused key: no second attempt
        [(name, cause)] = answers.failures
        assert name == error and cause["errorType"] == error and fragment in cause["errorMessage"], (error, cause)
        assert answers.failure.call_args.kwargs["taskToken"] == f"token-{index}"
        assert API_KEY not in json.dumps(cause)

        # what the subscriber reads once SubmitToNovita's Catch hands this failure to PublishNotice
        state = {"job": job, "stage": "submit", "error": {"Error": name, "Cause": answers.failure.call_args.kwargs["cause"]}}
        invoke(aws, "PublishFunction", state)
        [notice] = aws.notices()
        assert notice["error"]["code"] == code and notice["error"]["stage"] == "submit" and fragment in notice["error"]["message"], error
        assert API_KEY not in json.dumps(notice)
    assert answers.outputs == [] and answers.resent == []
    assert "Novita answered an error" in logged.getvalue() and API_KEY not in logged.getvalue()


@responses.activate
def test_an_unexpected_error_is_redelivered_then_fails_the_task_on_the_last_delivery(
    aws: Aws, answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "never"})
    execution, job = accepted_job(aws)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(submit_module, "image_reference", broken)
    body = submit_body(execution, job)
    assert submit(aws, body, receive_count=1) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert answers.failures == []
    assert submit(aws, body, receive_count=5) == {"batchItemFailures": []}  # the SubmitQueue's maxReceiveCount
    [(name, cause)] = answers.failures
    assert name == "SubmitFailed" and "after 5 attempts" in cause["errorMessage"]
    assert novita_calls() == [] and answers.outputs == []


@responses.activate
def test_a_late_redelivery_whose_task_was_already_answered_pays_nothing_and_is_not_failed(
    aws: Aws, answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-1"})
    execution, job = accepted_job(aws)
    body = submit_body(execution, job)
    submit(aws, body)
    # the execution moved on (it polls now): Step Functions refuses a second answer to the same token
    failing(monkeypatch, "stepfunctions", "send_task_success", aws_error("TaskTimedOut", 400, "SendTaskSuccess"))
    assert submit(aws, body, receive_count=2) == {"batchItemFailures": []}
    assert len(novita_calls(SUBMIT_URL)) == 1 and answers.failures == [] and answers.resent == []


@responses.activate
def test_a_passing_aws_fault_before_the_post_sends_the_message_again_later(
    aws: Aws, answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-1"})
    execution, job = accepted_job(aws)
    body = submit_body(execution, job)
    failing(monkeypatch, "dynamodb", "put_item", aws_error("ProvisionedThroughputExceededException", 400, "PutItem"))
    assert submit(aws, body) == {"batchItemFailures": []}
    [(again, delay)] = answers.resent
    assert again == {**body, "attempt": 1, "in_line": False, "woken": False} and 1 <= delay <= 900
    assert novita_calls() == [] and answers.failures == [] and answers.outputs == []


@responses.activate
def test_a_paid_task_is_handed_back_even_when_its_idempotency_record_cannot_be_saved(
    aws: Aws, answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-kept"})
    execution, job = accepted_job(aws)
    # the POST succeeded, then saving its result failed: the task is not thrown away (nor paid again by a retry)
    save = failing(monkeypatch, "dynamodb", "update_item", aws_error("InternalServerError", 500, "UpdateItem"))
    assert submit(aws, submit_body(execution, job)) == {"batchItemFailures": []}
    assert save.call_count >= 1 and len(novita_calls(SUBMIT_URL)) == 1
    assert [o.task_id for o in answers.outputs] == ["task-kept"] and answers.failures == [] and answers.resent == []


def aws_item(aws: Aws, key: str) -> dict[str, Any]:
    table = aws.stack.id("JobsTable")
    return boto3.client("dynamodb", region_name=REGION).get_item(TableName=table, Key={"job_id": {"S": key}}).get("Item") or {}  # type: ignore[no-any-return]


def wait_for(what: Callable[[], Any], seconds: float = 5) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


@responses.activate
def test_the_real_task_token_is_answered_and_the_execution_moves_on(aws_running: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    aws = aws_running
    answered = spy(monkeypatch, "stepfunctions", "send_task_success")
    responses.post(SUBMIT_URL, json={"task_id": "task-real"})
    put(aws, "incoming/real.txt", "p")
    put(aws, "incoming/real.jpg", jpeg_bytes())
    accept(aws, "incoming/real.jpg")
    [run] = executions(aws)

    def submit_message() -> list[dict[str, Any]]:
        return aws.sqs.receive_message(QueueUrl=aws.stack.id("SubmitQueue"), MaxNumberOfMessages=1).get("Messages", [])  # type: ignore[no-any-return]

    # what SubmitToNovita really sends: {token, execution, job}
    [message] = wait_for(submit_message)
    body = json.loads(message["Body"])
    assert set(body) == {"token", "execution", "job"} and body["execution"] == run["executionArn"]
    assert body["job"] == execution_input(aws, run)["job"]

    assert submit(aws, message["Body"]) == {"batchItemFailures": []}
    # Step Functions took the answer (a wrong token raises InvalidToken, which would leave the execution waiting)
    assert [c.kwargs["taskToken"] for c in answered.call_args_list] == [body["token"]]

    def waiting() -> list[dict[str, Any]]:
        events = aws.sfn.get_execution_history(executionArn=run["executionArn"])["events"]
        return [e for e in events if e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == "WaitForWebhook"]

    # Novita was asked for a webhook: the execution waits in a callback whose token is stored on the task's item
    [wait] = wait_for(waiting)
    state = json.loads(wait["stateEnteredEventDetails"]["input"])
    assert state["submitted"]["task_id"] == "task-real" and state["poll"] == state["submitted"]["first_poll"]
    body_sent = json.loads(novita_calls(SUBMIT_URL)[0].request.body)
    assert body_sent["extra"]["webhook"]["url"].startswith(aws.stack.environment["WEBHOOK_URL"])
    item = wait_for(lambda: aws_item(aws, "#task#task-real").get("token"))
    assert item["S"] and state["submitted"]["webhook_expires_at"] > time.time()
    # PollMinSeconds is 3600 here, but a first poll never comes after the job's deadline (MaxWaitMinutes, 30)
    assert state["poll"]["wait_seconds"] == 1800 and state["job"] == body["job"]

    # the same message delivered again, its task answered: nothing paid, the refused answer is not a failure
    assert submit(aws, message["Body"], receive_count=2) == {"batchItemFailures": []}
    assert len(novita_calls(SUBMIT_URL)) == 1 and answered.call_count == 2
