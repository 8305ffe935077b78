"""The Webhook function behind its Function URL: strangers get 404, the body is never trusted, every call is idempotent."""

from __future__ import annotations

import json
import threading
from typing import Any
from unittest import mock

import boto3
import pytest
import responses
from img2video.aws import clients, jobs_table, slot_line, task_item
from img2video.aws.secrets import path_secret
from img2video.core.jobs import PollRecord, history_key
from img2video.core.settings import get_settings
from img2video_local.lambda_server import load_handler
from img2video_local.template import REGION

from tests.conftest import API_KEY, NOVITA, Aws, as_function

RESULT_URL = f"{NOVITA}/v3/async/task-result"
TASK = "task-7f3a"
KIND = history_key("vidu-q2-turbo-img2video", "720p", 5, False)


class Context:
    function_name = "webhook"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:webhook"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def call(aws: Aws, body: Any, path: str | None = None, method: str = "POST") -> dict[str, Any]:
    """One request to the Function URL, as payload format 2.0."""
    secret = path_secret(get_settings())
    event = {
        "version": "2.0",
        "rawPath": f"/{secret}" if path is None else path,
        "requestContext": {"http": {"method": method, "path": "/"}},
        "body": body if isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }
    answer: dict[str, Any] = as_function("WebhookFunction", load_handler(aws.stack.functions["WebhookFunction"]))(event, Context())
    return answer


def result(status: str, reason: str = "") -> dict[str, Any]:
    task = {"task_id": TASK, "status": status, "reason": reason, "eta": 0, "progress_percent": 100 if "SUCCEED" in status else 40}
    videos = (
        [{"video_url": "https://videos.novita.test/v.mp4", "video_url_ttl": "3600", "video_type": "mp4"}] if "SUCCEED" in status else []
    )
    return {"task": task, "videos": videos, "extra": {}, "images": [], "audios": []}


def webhook(status: str = "TASK_STATUS_SUCCEED", task_id: str = TASK) -> dict[str, Any]:
    return {"event_type": "ASYNC_TASK_RESULT", "payload": {**result(status), "task": {**result(status)["task"], "task_id": task_id}}}


def item(aws: Aws) -> dict[str, Any]:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    return dynamodb.get_item(TableName=aws.stack.id("JobsTable"), Key={"job_id": {"S": f"#task#{TASK}"}}).get("Item") or {}  # type: ignore[no-any-return]


def waiting(aws: Aws, token: str = "token-1", polls: int = 3) -> dict[str, Any]:
    """What the state machine's WaitForWebhook step writes: the wait's token on the task's item, unless a webhook came."""
    return boto3.client("dynamodb", region_name=REGION).update_item(  # type: ignore[no-any-return]
        TableName=aws.stack.id("JobsTable"),
        Key={"job_id": {"S": f"#task#{TASK}"}},
        UpdateExpression="SET #token = :token, job = :job, history = :history, polls = :polls, expires_at = :expires",
        ConditionExpression="attribute_not_exists(arrived)",
        ExpressionAttributeNames={"#token": "token"},
        ExpressionAttributeValues={
            ":token": {"S": token},
            ":job": {"S": "cat-1"},
            ":history": {"S": KIND},
            ":polls": {"N": str(polls)},
            ":expires": {"N": "9999999999"},
        },
    )


@pytest.fixture
def sfn(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> mock.MagicMock:
    """The Step Functions calls the Webhook function makes (the tokens here are not real ones)."""
    recorder = mock.MagicMock()
    monkeypatch.setattr(clients.quick_client("stepfunctions"), "send_task_success", recorder.send_task_success)
    monkeypatch.setattr(clients.quick_client("stepfunctions"), "send_task_failure", recorder.send_task_failure)
    return recorder


def status_of(answer: dict[str, Any]) -> int:
    return int(answer["statusCode"])


@responses.activate
def test_a_call_without_the_secret_path_is_404_and_costs_nothing(aws: Aws, sfn: mock.MagicMock) -> None:
    for path in ("/", "/wrong", "/" + "a" * 64, "", "/../"):
        answer = call(aws, webhook(), path=path)
        assert status_of(answer) == 404 and json.loads(answer["body"]) == {"message": "Not Found"}
    assert len(responses.calls) == 0 and not sfn.method_calls and item(aws) == {}


@responses.activate
def test_the_secret_is_long_random_and_kept_out_of_every_answer(aws: Aws, sfn: mock.MagicMock) -> None:
    secret = path_secret(get_settings())
    assert len(secret) == 64 and secret.isalnum()
    assert secret not in json.dumps(call(aws, webhook(), path="/nope")) + json.dumps(call(aws, {"event_type": "OTHER"}))


@responses.activate
def test_events_other_than_async_task_result_are_ignored_without_asking_novita(aws: Aws, sfn: mock.MagicMock) -> None:
    waiting(aws)
    for body in ({"event_type": "BALANCE_LOW", "payload": {}}, {"payload": webhook()["payload"]}):
        answer = call(aws, body)
        assert status_of(answer) == 200 and "ignored" in answer["body"]
    assert status_of(call(aws, "not json")) == 400 and status_of(call(aws, {"event_type": "ASYNC_TASK_RESULT", "payload": {}})) == 400
    assert status_of(call(aws, webhook(task_id="../../etc"))) == 400 and status_of(call(aws, webhook(), method="GET")) == 405
    assert len(responses.calls) == 0 and not sfn.method_calls and item(aws)["token"]["S"] == "token-1"


@responses.activate
def test_a_forged_success_costs_one_task_result_request_and_changes_nothing(aws: Aws, sfn: mock.MagicMock) -> None:
    waiting(aws)
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING"))
    answer = call(aws, webhook("TASK_STATUS_SUCCEED"))
    assert status_of(answer) == 200 and "not finished" in answer["body"]
    assert len(responses.calls) == 1 and responses.calls[0].request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert not sfn.method_calls and "arrived" not in item(aws) and item(aws)["token"]["S"] == "token-1"  # the job still waits


@responses.activate
def test_a_forged_call_for_a_task_of_another_account_changes_nothing(aws: Aws, sfn: mock.MagicMock) -> None:
    responses.get(RESULT_URL, status=404, json={"code": 404, "reason": "TASK_NOT_FOUND", "message": "task not found"})
    answer = call(aws, webhook())
    assert status_of(answer) == 200 and "no such task" in answer["body"] and len(responses.calls) == 1
    assert not sfn.method_calls and item(aws) == {}


@responses.activate
def test_a_confirmed_webhook_ends_the_wait_once_and_a_replay_costs_nothing(aws: Aws, sfn: mock.MagicMock) -> None:
    waiting(aws, polls=3)
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    assert status_of(call(aws, webhook())) == 200
    [success] = sfn.send_task_success.call_args_list
    record = PollRecord.model_validate_json(success.kwargs["output"])
    assert success.kwargs["taskToken"] == "token-1"
    assert (record.status, record.polls, record.detected_by) == ("succeeded", 3, "webhook")
    assert "token" not in item(aws) and item(aws)["arrived"]["S"] == "TASK_STATUS_SUCCEED"  # the token is used once, then gone
    # Novita's retries, a duplicate, a replay next week: answered 2xx, nothing asked, nothing sent
    for _ in range(3):
        assert status_of(call(aws, webhook())) == 200
    assert len(responses.calls) == 1 and sfn.send_task_success.call_count == 1


@responses.activate
def test_a_failed_task_fails_the_wait_with_novitas_reason(aws: Aws, sfn: mock.MagicMock) -> None:
    waiting(aws)
    responses.get(RESULT_URL, json=result("TASK_STATUS_FAILED", reason="content moderation: the image was rejected"))
    assert status_of(call(aws, webhook("TASK_STATUS_FAILED"))) == 200
    [failure] = sfn.send_task_failure.call_args_list
    assert failure.kwargs["error"] == "ProviderFailed" and "content moderation" in json.loads(failure.kwargs["cause"])["errorMessage"]


@responses.activate
def test_a_webhook_before_the_job_waits_leaves_the_outcome_and_the_next_wait_is_refused(aws: Aws, sfn: mock.MagicMock) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    answer = call(aws, webhook())
    assert status_of(answer) == 200 and "next poll" in answer["body"] and not sfn.method_calls
    # the execution's wait stores no token: Step Functions reports DynamoDb.ConditionalCheckFailedException, and the poll runs at once
    with pytest.raises(boto3.client("dynamodb", region_name=REGION).exceptions.ConditionalCheckFailedException):
        waiting(aws)


@responses.activate
def test_duplicate_deliveries_at_the_same_moment_end_the_wait_once(aws: Aws, sfn: mock.MagicMock) -> None:
    waiting(aws)
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(call(aws, webhook()))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status_of(answer) for answer in answers] == [200] * 6
    assert sfn.send_task_success.call_count == 1


@responses.activate
def test_a_wait_that_already_timed_out_is_not_an_error(aws: Aws, sfn: mock.MagicMock) -> None:
    """The webhook raced a poll: the token no longer waits; the poll (or the next wait, refused) sees the outcome."""
    waiting(aws)
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    error = boto3.client("stepfunctions", region_name=REGION).exceptions.TaskTimedOut(
        {"Error": {"Code": "TaskTimedOut"}}, "SendTaskSuccess"
    )
    sfn.send_task_success.side_effect = error
    answer = call(aws, webhook())
    assert status_of(answer) == 200 and "polling" in answer["body"] and item(aws)["arrived"]["S"] == "TASK_STATUS_SUCCEED"


@responses.activate
def test_a_webhook_that_comes_after_its_job_was_stored_still_counts_for_its_kind(aws: Aws, sfn: mock.MagicMock) -> None:
    """A poll saw the task done a moment before the webhook came, and Store found no arrival yet: later jobs of the kind
    must still count it, or a kind whose webhooks all come is never trusted and its jobs keep polling."""
    waiting(aws)  # its wait timed out and a poll saw the task done: the job and its kind stay on the task's item
    jobs_table.record_generation_time(KIND, "cat-1", 61.0, "asked")
    assert jobs_table.kind_history(KIND).webhook_arrivals == [False]
    sfn.send_task_success.side_effect = boto3.client("stepfunctions", region_name=REGION).exceptions.TaskTimedOut(
        {"Error": {"Code": "TaskTimedOut"}}, "SendTaskSuccess"
    )
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    assert status_of(call(aws, webhook())) == 200
    assert jobs_table.kind_history(KIND).webhook_arrivals == [True]
    # a later job of the kind that takes the same ring slot does not inherit the arrival
    assert jobs_table._slot("cat-44") == jobs_table._slot("cat-1")
    jobs_table.record_generation_time(KIND, "cat-44", 62.0, "asked")
    assert jobs_table.kind_history(KIND).webhook_arrivals == [False]


@responses.activate
def test_the_confirmed_video_url_is_left_for_store_to_take_once(aws: Aws, sfn: mock.MagicMock) -> None:
    waiting(aws)
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    assert status_of(call(aws, webhook())) == 200
    notes = task_item.take_notes(TASK)
    assert notes.webhook_arrived and notes.video_url == "https://videos.novita.test/v.mp4"
    again = task_item.take_notes(TASK)  # a retried Store asks Novita for a fresh URL: this one may have been the fault
    assert again.webhook_arrived and again.video_url is None


@responses.activate
def test_a_busy_novita_is_answered_503_so_the_webhook_comes_again(aws: Aws, sfn: mock.MagicMock) -> None:
    waiting(aws)
    responses.get(RESULT_URL, status=503, json={"code": 503, "reason": "SERVICE_UNAVAILABLE", "message": "busy"})
    assert status_of(call(aws, webhook())) == 503
    assert "arrived" not in item(aws) and item(aws)["token"]["S"] == "token-1" and not sfn.method_calls


@responses.activate
def test_an_unreadable_webhook_secret_means_a_submit_without_a_webhook_not_a_failure(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook only makes a job faster: a Secrets Manager fault never holds up (or fails) the paid submit."""
    from botocore.exceptions import ClientError
    from img2video.aws import secrets
    from img2video.aws.secrets import webhook_url

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "GetSecretValue")

    settings = get_settings()
    assert webhook_url(settings) is not None
    clients.reset()
    monkeypatch.setattr(secrets._quick_secrets_provider(), "get", refuse)
    assert webhook_url(get_settings()) is None


@responses.activate
def test_novita_echoing_the_webhook_url_never_carries_the_secret_into_an_error(aws: Aws) -> None:
    from img2video.core.errors import ProviderRejected
    from img2video.novita.client import NovitaClient

    secret = path_secret(get_settings())
    responses.post(
        f"{NOVITA}/v3/async/vidu-q2-turbo-img2video", status=400, json={"reason": "INVALID_REQUEST_BODY", "message": f"bad url /{secret}"}
    )
    client = NovitaClient(NOVITA, API_KEY)
    client.mask(secret)
    with pytest.raises(ProviderRejected) as caught:
        client.submit({"images": ["https://x/y.jpg"], "prompt": "p"})
    assert secret not in caught.value.message and "***" in caught.value.message


@responses.activate
def test_a_task_end_seen_by_its_poll_and_its_webhook_wakes_one_job_from_the_line_not_two(aws: Aws, sfn: mock.MagicMock) -> None:
    # one slot freed, two jobs woken: the second would be turned away by Novita and lose its place in the line
    dynamodb, sqs = boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION)
    for job_id in ("line-a", "line-b"):
        dynamodb.put_item(TableName=aws.stack.id("JobsTable"), Item={"job_id": {"S": job_id}, "state": {"S": "accepted"}})
        sqs.send_message(QueueUrl=aws.stack.id("SlotLineQueue"), MessageBody=json.dumps({"job": {"job_id": job_id}}))
    waiting(aws)
    assert slot_line.task_ended(TASK) == "line-a"  # the poll saw the task end first
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    assert status_of(call(aws, webhook())) == 200 and sfn.send_task_success.call_count == 1  # then its webhook came
    assert slot_line.task_ended(TASK) is None  # and a retried poll wakes nobody either
    woken = sqs.receive_message(QueueUrl=aws.stack.id("SubmitQueue"), MaxNumberOfMessages=10).get("Messages", [])
    left = sqs.receive_message(QueueUrl=aws.stack.id("SlotLineQueue"), MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["job"]["job_id"] for m in woken] == ["line-a"] and json.loads(woken[0]["Body"])["woken"] is True
    assert [json.loads(m["Body"])["job"]["job_id"] for m in left] == ["line-b"]
