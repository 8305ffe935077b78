"""Builders and helpers the step tests share: invoking a function under its role, S3 objects, Novita's answers."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
import responses
from botocore.exceptions import ClientError
from img2video.aws import clients
from img2video.core.jobs import Submitted
from img2video_local.lambda_server import load_handler

from tests.conftest import NOVITA, Aws, as_function, jpeg_bytes, s3_event, sqs_event

SUBMIT_URL = f"{NOVITA}/v3/async/vidu-q2-turbo-img2video"

RESULT_URL = f"{NOVITA}/v3/async/task-result"

VIDEO_URL = "https://videos.novita.test/v/task-1.mp4?sig=abc"

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40

JOB_ID = "cat-0123456789"


def handler(aws: Aws, name: str) -> Any:
    return as_function(name, load_handler(aws.stack.functions[name]))


class Context:
    """A Lambda context with `seconds` left (conftest's FakeContext has 30 s: less than Accept's per-record reserve,
    so Accept would hand every record back)."""

    memory_limit_in_mb = 256
    aws_request_id = "req-1"

    def __init__(self, name: str, arn: str, seconds: float) -> None:
        self.function_name, self.invoked_function_arn = name, arn
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def context(aws: Aws, name: str, seconds: float | None = None) -> Context:
    """The function's context with its whole timeout (from template.yaml) left, unless told otherwise."""
    spec = aws.stack.functions[name]
    return Context(spec.name, spec.arn, spec.timeout if seconds is None else seconds)


def invoke(aws: Aws, name: str, event: dict[str, Any]) -> Any:
    return handler(aws, name)(event, context(aws, name))


def put(aws: Aws, key: str, body: bytes | str, bucket: str | None = None) -> None:
    aws.s3.put_object(Bucket=bucket or aws.input_bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)


def now_iso(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + offset))


def executions(aws: Aws) -> list[dict[str, Any]]:
    return aws.sfn.list_executions(stateMachineArn=aws.stack.id("VideoJobStateMachine"))["executions"]  # type: ignore[no-any-return]


def execution_input(aws: Aws, run: dict[str, Any]) -> dict[str, Any]:
    return json.loads(aws.sfn.describe_execution(executionArn=run["executionArn"])["input"])  # type: ignore[no-any-return]


def tags(aws: Aws, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in aws.s3.get_object_tagging(Bucket=aws.input_bucket, Key=key)["TagSet"]}


def novita_calls(url: str | None = None) -> list[Any]:
    return [call for call in responses.calls if url is None or (call.request.url or "").split("?")[0] == url.split("?")[0]]


def spy(monkeypatch: pytest.MonkeyPatch, service: str, method: str) -> mock.MagicMock:
    """Record the calls the handlers make with the shared client (clients.client), still making them."""
    target = clients.client(service)
    recorder = mock.MagicMock(side_effect=getattr(target, method))
    monkeypatch.setattr(target, method, recorder)
    return recorder


def aws_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "simulated"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def failing(monkeypatch: pytest.MonkeyPatch, service: str, method: str, error: ClientError, times: int | None = None) -> mock.MagicMock:
    """Make the shared client's `method` raise `error` (the first `times` calls, or every call)."""
    target = clients.client(service)
    real = getattr(target, method)
    calls = {"n": 0}

    def maybe_fail(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if times is None or calls["n"] <= times:
            raise error
        return real(*args, **kwargs)

    recorder = mock.MagicMock(side_effect=maybe_fail)
    monkeypatch.setattr(target, method, recorder)
    return recorder


PRESIGNED = re.compile(
    r"^https://(?P<host>[a-z0-9.-]+\.s3\.us-east-1\.amazonaws\.com|s3\.us-east-1\.amazonaws\.com)/(?P<path>[^?]+)\?(?P<query>.+)$"
)


def assert_presigned(url: str, bucket: str, key: str) -> None:
    """A SigV4 URL on the regional host, which every bucket accepts (SigV2 and the global host are refused by new ones)."""
    match = PRESIGNED.match(url)
    assert match, f"not a presigned URL on the regional host: {url}"
    quoted = quote(key, safe="/~")
    if match["host"].startswith(f"{bucket}."):
        assert match["path"] == quoted, url
    else:
        assert match["path"] == f"{bucket}/{quoted}", url
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in match["query"] and "X-Amz-Signature=" in match["query"], url
    assert re.search(r"X-Amz-Credential=[^&]+%2F\d{8}%2Fus-east-1%2Fs3%2Faws4_request", match["query"]), url


def accept(aws: Aws, *keys: str, receive_count: int = 1, event_time: str | None = None) -> dict[str, Any]:
    """S3's events for `keys`, one SQS record each, through the AcceptFunction."""
    event = sqs_event(*(s3_event(aws.input_bucket, key, event_time or now_iso()) for key in keys), receive_count=receive_count)
    return invoke(aws, "AcceptFunction", event)  # type: ignore[no-any-return]


def requeued(sent: mock.MagicMock, queue_url: str) -> list[tuple[dict[str, Any], int]]:
    """(body, delay) of each message sent to `queue_url` through a spied sqs.send_message."""
    return [
        (json.loads(call.kwargs["MessageBody"]), int(call.kwargs.get("DelaySeconds", 0)))
        for call in sent.call_args_list
        if call.kwargs["QueueUrl"] == queue_url
    ]


def accepted_job(aws: Aws, sidecar: dict[str, Any] | None = None, key: str = "incoming/a/cat.jpg") -> tuple[str, dict[str, Any]]:
    """Upload an image and its sidecar and accept them: the job's running execution and the job it carries."""
    stem = key.rsplit(".", 1)[0]
    put(aws, f"{stem}.json", json.dumps(sidecar or {"prompt": "a cat yawns", "resolution": "1080p"}))
    put(aws, key, jpeg_bytes())
    accept(aws, key)
    [run] = [run for run in executions(aws) if execution_input(aws, run)["job"]["source"]["key"] == key]
    return run["executionArn"], execution_input(aws, run)["job"]


def submit_body(execution: str, job: dict[str, Any], token: str = "token-1") -> dict[str, Any]:
    """The SubmitQueue message as SubmitToNovita sends it: {token: $$.Task.Token, execution: $$.Execution.Id, job: $.job}."""
    return {"token": token, "execution": execution, "job": job}


def submit(aws: Aws, body: dict[str, Any] | str, receive_count: int = 1) -> dict[str, Any]:
    return invoke(aws, "SubmitFunction", sqs_event(body, receive_count=receive_count))  # type: ignore[no-any-return]


class Answers:
    """What the Submit function told Step Functions (SendTaskSuccess / SendTaskFailure), and its re-sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, aws: Aws) -> None:
        self.success = spy(monkeypatch, "stepfunctions", "send_task_success")
        self.failure = spy(monkeypatch, "stepfunctions", "send_task_failure")
        self.sent = spy(monkeypatch, "sqs", "send_message")
        self.queue = aws.stack.id("SubmitQueue")

    @property
    def outputs(self) -> list[Submitted]:
        return [Submitted.model_validate_json(call.kwargs["output"]) for call in self.success.call_args_list]

    @property
    def failures(self) -> list[tuple[str, dict[str, Any]]]:
        return [(call.kwargs["error"], json.loads(call.kwargs["cause"])) for call in self.failure.call_args_list]

    @property
    def resent(self) -> list[tuple[dict[str, Any], int]]:
        return requeued(self.sent, self.queue)


def _queued(aws: Aws, queue: str) -> list[dict[str, Any]]:
    """The bodies a queue would deliver now (visible: not delayed), taken off it."""
    url = aws.stack.id(queue)
    bodies = []
    while messages := aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in messages]
        for m in messages:
            aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return bodies


def _line_length(aws: Aws) -> int:
    attributes = aws.sqs.get_queue_attributes(QueueUrl=aws.stack.id("SlotLineQueue"), AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


FULL = {"code": 429, "reason": "TOO_MANY_CONCURRENT_TASKS", "message": "at most 5 tasks may run at once"}


def _task_ends(aws: Aws, task_id: str = "task-1") -> None:
    """A poll sees a task succeed: its slot at Novita is free."""
    responses.upsert(responses.GET, RESULT_URL, json=result("TASK_STATUS_SUCCEED", progress_percent=100))
    state = state_dict(poll={"status": "running", "polls": 2, "wait_seconds": 8})
    state["submitted"]["task_id"] = task_id
    assert poll(aws, state)["status"] == "succeeded"


def job_dict(bucket: str = "in", key: str = "incoming/cat.jpg", job_id: str = JOB_ID, **request: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "source": {"bucket": bucket, "key": key, "etag": "e"},
        "request": {"prompt": "p", "duration": 5, "resolution": "720p", "movement_amplitude": "auto", "off_peak": False, **request},
        "video_key": "videos/cat.mp4",
        "manifest_key": "videos/cat.json",
        "uploaded_at": now_iso(-120),
    }


def state_dict(job: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The execution's data as the state machine hands it to Poll, Store and Publish."""
    submitted = {
        "task_id": "task-1",
        "submitted_at": now_iso(-60),
        "deadline": time.time() + 600,
        "first_poll": {"status": "submitted", "polls": 0, "wait_seconds": 5},
    }
    state = {
        "job": job or job_dict(),
        "accepted_at": now_iso(-100),
        "submit_window_seconds": 86400,
        "submitted": submitted,
        "poll": {"status": "submitted", "polls": 0, "wait_seconds": 5},
    }
    state.update(overrides)
    return state


def result(status: str, video_url: str = VIDEO_URL, **task: Any) -> dict[str, Any]:
    videos = [{"video_url": video_url, "video_url_ttl": "3600", "video_type": "mp4"}] if status == "TASK_STATUS_SUCCEED" else []
    return {"task": {"task_id": "task-1", "status": status, **task}, "videos": videos, "extra": {"seed": "42"}}


def poll(aws: Aws, state: dict[str, Any]) -> dict[str, Any]:
    return invoke(aws, "PollFunction", state)  # type: ignore[no-any-return]


def store_state(aws: Aws) -> dict[str, Any]:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    job = job_dict(aws.input_bucket, tags={"team": "cats"})
    return state_dict(job, poll={"status": "succeeded", "polls": 3, "progress_percent": 100, "finished_at": now_iso()})


def store(aws: Aws, state: dict[str, Any]) -> dict[str, Any]:
    return invoke(aws, "StoreFunction", state)  # type: ignore[no-any-return]


def failed(stage: str, error: str, message: str) -> dict[str, Any]:
    return {"stage": stage, "error": {"Error": error, "Cause": json.dumps({"errorType": error, "errorMessage": message})}}
