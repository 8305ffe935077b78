"""Each Lambda handler against moto (AWS) and responses (Novita), one at a time, as a user of the bucket would see it.

No execution runs here (the `aws` fixture): a handler gets the input the state machine or the queue would give it,
and the tests look at what a user or the next step sees: executions started, SubmitQueue and UploadQueue messages,
the task answered, objects in S3, tags on the image, notices on SNS, calls to Novita. One test (`aws_running`)
lets moto run the real state machine, so the Submit function answers a real task token.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock
from urllib.parse import quote

import boto3
import pytest
import responses
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from img2video.aws import clients, idempotency, jobs_table, s3_objects, slot_line, video_transfer
from img2video.core.errors import DownloadFailed, DownloadInterrupted, ProviderFailed, ProviderTimeout
from img2video.core.jobs import ExecutionState, Submitted, history_key
from img2video.core.wait_policy import MAX_POLLS
from img2video.steps import accept as accept_module
from img2video.steps import publish
from img2video.steps import submit as submit_module
from img2video_local.aws_faults import Invocation, install_hooks, running, sample_short_polls, uninstall_hooks
from img2video_local.lambda_server import load_handler
from img2video_local.stack import provision
from img2video_local.template import REGION, Template
from moto import mock_aws

from tests.conftest import ANY_CHAR, API_KEY, NOVITA, Aws, any_text, as_function, bomb_png, jpeg_bytes, png_bytes, s3_event, sqs_event

SUBMIT_URL = f"{NOVITA}/v3/async/vidu-q2-turbo-img2video"
RESULT_URL = f"{NOVITA}/v3/async/task-result"
VIDEO_URL = "https://videos.novita.test/v/task-1.mp4?sig=abc"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
JOB_ID = "cat-0123456789"


# -- plumbing ------------------------------------------------------------------------------------------------
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


# -- Accept --------------------------------------------------------------------------------------------------
def accept(aws: Aws, *keys: str, receive_count: int = 1, event_time: str | None = None) -> dict[str, Any]:
    """S3's events for `keys`, one SQS record each, through the AcceptFunction."""
    event = sqs_event(*(s3_event(aws.input_bucket, key, event_time or now_iso()) for key in keys), receive_count=receive_count)
    return invoke(aws, "AcceptFunction", event)  # type: ignore[no-any-return]


def recheck(aws: Aws, key: str, first_seen: float, attempt: int = 0, reason: str = "await-sidecar", receive_count: int = 1) -> Any:
    """The Accept function's own delayed re-check of a key, as it put it on the UploadQueue."""
    body = {"img2video": {"bucket": aws.input_bucket, "key": key, "first_seen": first_seen, "attempt": attempt, "reason": reason}}
    return invoke(aws, "AcceptFunction", sqs_event(body, receive_count=receive_count))


def requeued(sent: mock.MagicMock, queue_url: str) -> list[tuple[dict[str, Any], int]]:
    """(body, delay) of each message sent to `queue_url` through a spied sqs.send_message."""
    return [
        (json.loads(call.kwargs["MessageBody"]), int(call.kwargs.get("DelaySeconds", 0)))
        for call in sent.call_args_list
        if call.kwargs["QueueUrl"] == queue_url
    ]


@responses.activate
def test_image_first_waits_for_its_sidecar_then_one_execution_starts(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = spy(monkeypatch, "sqs", "send_message")
    put(aws, "incoming/a/cat.jpg", jpeg_bytes())

    assert accept(aws, "incoming/a/cat.jpg") == {"batchItemFailures": []}
    # no sidecar yet: the image is looked at again once the grace period is over, on the UploadQueue
    [(body, delay)] = requeued(sent, aws.stack.id("UploadQueue"))
    assert body["img2video"]["key"] == "incoming/a/cat.jpg" and body["img2video"]["reason"] == "await-sidecar"
    assert 59 <= delay <= 61
    assert tags(aws, "incoming/a/cat.jpg")["img2video-status"] == "queued"
    assert executions(aws) == [] and aws.notices() == []

    put(aws, "incoming/a/cat.json", json.dumps({"prompt": "a cat yawns", "resolution": "1080p", "tags": {"team": "cats"}}))
    assert accept(aws, "incoming/a/cat.json") == {"batchItemFailures": []}

    [run] = executions(aws)
    state = execution_input(aws, run)
    job = state["job"]
    assert run["name"] == job["job_id"] and run["name"].startswith("cat-")
    assert (
        job["source"] == {"bucket": aws.input_bucket, "key": "incoming/a/cat.jpg", "etag": job["source"]["etag"]} and job["source"]["etag"]
    )
    assert job["sidecar"]["key"] == "incoming/a/cat.json"
    assert job["request"]["prompt"] == "a cat yawns" and job["request"]["resolution"] == "1080p" and job["request"]["duration"] == 5
    assert (job["video_key"], job["manifest_key"]) == ("videos/a/cat.mp4", "videos/a/cat.json")
    assert state["submit_window_seconds"] == 86400 and state["accepted_at"]
    assert tags(aws, "incoming/a/cat.jpg") == {"img2video-status": "queued", "img2video-job": run["name"]}
    assert aws.notices() == [] and novita_calls() == []  # nothing is paid at acceptance


def test_sidecar_first_then_image_starts_one_execution(aws: Aws) -> None:
    put(aws, "incoming/dog.txt", "a dog runs")
    assert accept(aws, "incoming/dog.txt") == {"batchItemFailures": []}
    assert executions(aws) == []  # a sidecar alone starts nothing

    put(aws, "incoming/dog.png", png_bytes())
    assert accept(aws, "incoming/dog.png") == {"batchItemFailures": []}
    [run] = executions(aws)
    assert execution_input(aws, run)["job"]["request"]["prompt"] == "a dog runs"
    assert tags(aws, "incoming/dog.png")["img2video-status"] == "queued" and aws.notices() == []


def test_keys_with_spaces_plus_percent_and_unicode_are_found(aws: Aws) -> None:
    key = "incoming/my photos/été + 100%.JPG"
    put(aws, "incoming/my photos/été + 100%.txt", "Snow falls")
    put(aws, key, jpeg_bytes())
    accept(aws, key)  # the event carries the key URL-encoded, + for spaces
    [run] = executions(aws)
    job = execution_input(aws, run)["job"]
    assert job["source"]["key"] == key and job["request"]["prompt"] == "Snow falls"
    assert job["video_key"] == "videos/my photos/été + 100%.mp4"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", run["name"])  # a valid execution name


def test_image_and_sidecar_pair_across_unicode_normalizations(aws: Aws) -> None:
    image = unicodedata.normalize("NFD", "incoming/café/crème.jpg")  # as some macOS tools write it
    sidecar = unicodedata.normalize("NFC", "incoming/café/crème.txt")
    assert image[:-4] != sidecar[:-4]
    put(aws, image, jpeg_bytes())
    put(aws, sidecar, "steam rises")
    accept(aws, image)
    [run] = executions(aws)
    assert execution_input(aws, run)["job"]["request"]["prompt"] == "steam rises"


def test_json_sidecar_wins_over_txt(aws: Aws) -> None:
    put(aws, "incoming/dog.txt", "from txt")
    put(aws, "incoming/dog.json", json.dumps({"prompt": "from json"}))
    put(aws, "incoming/dog.png", b"")  # replaced below: the pairing must use the current objects
    put(aws, "incoming/dog.png", png_bytes())
    accept(aws, "incoming/dog.png")
    [run] = executions(aws)
    job = execution_input(aws, run)["job"]
    assert job["request"]["prompt"] == "from json" and job["sidecar"]["key"] == "incoming/dog.json"


def test_images_sharing_a_name_get_videos_that_do_not_overwrite_each_other(aws: Aws) -> None:
    put(aws, "incoming/twin.jpg", jpeg_bytes())
    put(aws, "incoming/twin.png", png_bytes())
    put(aws, "incoming/twin.txt", "both of us")
    assert accept(aws, "incoming/twin.txt") == {"batchItemFailures": []}
    jobs = [execution_input(aws, run)["job"] for run in executions(aws)]
    assert sorted(job["video_key"] for job in jobs) == ["videos/twin-jpg.mp4", "videos/twin-png.mp4"]
    assert len({job["job_id"] for job in jobs}) == 2


@responses.activate
def test_image_without_sidecar_fails_with_missing_sidecar_after_the_grace_period(aws: Aws) -> None:
    put(aws, "incoming/lonely.jpg", jpeg_bytes())
    accept(aws, "incoming/lonely.jpg")
    assert aws.notices() == [] and tags(aws, "incoming/lonely.jpg")["img2video-status"] == "queued"

    assert recheck(aws, "incoming/lonely.jpg", first_seen=time.time() - 61) == {"batchItemFailures": []}
    [notice] = aws.notices()
    assert notice["event"] == "video.failed" and notice["error"]["code"] == "MISSING_SIDECAR"
    assert notice["error"]["stage"] == "submit" and notice["notice_id"] == f"{notice['job_id']}:failed"
    assert "incoming/lonely.json or incoming/lonely.txt" in notice["error"]["message"]
    assert notice["_attributes"]["event"] == "video.failed" and notice["_subject"] == "Video failed (MISSING_SIDECAR): lonely.jpg"
    assert executions(aws) == [] and novita_calls() == []
    assert tags(aws, "incoming/lonely.jpg")["img2video-status"] == "failed"


def test_sidecar_without_image_starts_nothing_and_notifies_nobody(aws: Aws) -> None:
    put(aws, "incoming/orphan.json", json.dumps({"prompt": "p"}))
    assert accept(aws, "incoming/orphan.json") == {"batchItemFailures": []}
    assert executions(aws) == [] and aws.notices() == []


def test_default_prompt_covers_images_without_sidecar(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_PROMPT", "Bring it to life")
    monkeypatch.setenv("SIDECAR_GRACE_SECONDS", "0")
    clients.reset()
    put(aws, "incoming/plain.jpg", jpeg_bytes())
    accept(aws, "incoming/plain.jpg")
    [run] = executions(aws)
    assert execution_input(aws, run)["job"]["request"]["prompt"] == "Bring it to life"


def test_image_keys_that_climb_or_hide_get_a_notice_not_a_job(aws: Aws) -> None:
    for key in ("incoming/a/../b.jpg", "incoming/./c.png", "incoming/d//e.jpg"):
        put(aws, key, jpeg_bytes())
        accept(aws, key)
        [notice] = aws.notices()
        assert notice["error"]["code"] == "UNSUPPORTED_IMAGE" and "'..' folder name" in notice["error"]["message"], key
        assert notice["source"]["key"] == key and executions(aws) == [], key


def test_s3_test_event_is_ignored(aws: Aws) -> None:
    body = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": aws.input_bucket}
    assert invoke(aws, "AcceptFunction", sqs_event(body)) == {"batchItemFailures": []}
    assert aws.notices() == [] and executions(aws) == []


# (sidecar, image, code, fragment of the message); each case under its own name, all in one stack
BAD_INPUTS = {
    "typo": ('{"prompt": "x", "durration": 5}', jpeg_bytes(), "INVALID_SIDECAR", 'did you mean "duration"?'),
    "bad-json": ('{"prompt": "x",', jpeg_bytes(), "INVALID_SIDECAR", "is not valid JSON"),
    "extra-climbs": ('{"prompt": "x", "extra_images": ["../../secret/x.jpg"]}', jpeg_bytes(), "INVALID_SIDECAR", "must name a .jpg"),
    "extra-missing": ('{"prompt": "x", "extra_images": ["missing.jpg"]}', jpeg_bytes(), "INVALID_SIDECAR", "does not exist"),
    "too-big": ("x" * 70000, jpeg_bytes(), "INVALID_SIDECAR", "a sidecar may be at most 65536 bytes"),
    "empty-image": ('{"prompt": "x"}', b"", "UNSUPPORTED_IMAGE", "is empty (0 bytes)"),
    "not-an-image": ('{"prompt": "x"}', b"GIF89a not really", "UNSUPPORTED_IMAGE", "is not a JPEG, PNG or WebP image"),
    "truncated-image": ('{"prompt": "x"}', jpeg_bytes()[:-40], "UNSUPPORTED_IMAGE", "looks truncated"),
}


@responses.activate
def test_bad_input_ends_in_exactly_one_failure_notice_no_execution_and_nothing_paid(aws: Aws) -> None:
    for name, (sidecar, image, code, fragment) in BAD_INPUTS.items():
        put(aws, f"incoming/{name}.json", sidecar)
        put(aws, f"incoming/{name}.jpg", image)
        assert accept(aws, f"incoming/{name}.jpg") == {"batchItemFailures": []}, name  # no retry storm
        # the sidecar's event and a duplicate: the same job, no second notice
        accept(aws, f"incoming/{name}.json", f"incoming/{name}.jpg")
        [notice] = aws.notices()
        assert notice["event"] == "video.failed" and notice["video"] is None, name
        assert notice["error"]["code"] == code and fragment in notice["error"]["message"], (name, notice["error"])
        assert notice["error"]["stage"] == "submit" and notice["notice_id"] == f"{notice['job_id']}:failed", name
        assert tags(aws, f"incoming/{name}.jpg")["img2video-status"] == "failed", name
        # inputs are never deleted or rewritten
        assert aws.s3.get_object(Bucket=aws.input_bucket, Key=f"incoming/{name}.jpg")["Body"].read() == image, name
    assert executions(aws) == [] and novita_calls() == []


# -- whatever a user uploads: exactly one outcome per image, and nothing refused is ever paid (issue 8) -----------
ANY_TEXT = any_text(max_size=10)
SIDECAR_FIELD = st.sampled_from(["prompt", "duration", "resolution", "tags", "extra_images", "output_name", "seed"]) | ANY_TEXT
SIDECAR_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 20) | st.sampled_from(["720p", "small", "a cat"]) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SIDECAR_FIELD, inner, max_size=3),
    max_leaves=8,
)
SIDECAR_DOCUMENT = st.builds(
    lambda prompt, rest: {**rest, "prompt": prompt},
    ANY_TEXT | st.just("a cat yawns"),
    st.dictionaries(SIDECAR_FIELD, SIDECAR_VALUE, max_size=3),
)
_examples = iter(range(1_000_000))


def outcomes(aws: Aws, key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The notices and the executions this image got."""
    notices = [n for n in aws.notices() if n["source"]["key"] == key]
    runs = [run for run in executions(aws) if execution_input(aws, run)["job"]["source"]["key"] == key]
    return notices, runs


@given(sidecar=SIDECAR_DOCUMENT | SIDECAR_VALUE)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_sidecar_ends_in_one_refusal_notice_or_one_execution_never_both(aws: Aws, sidecar: Any) -> None:
    folder = f"incoming/any-sidecar/{next(_examples)}/"
    put(aws, folder + "x.json", json.dumps(sidecar, ensure_ascii=True))  # lone surrogates travel as \\uXXXX escapes
    put(aws, folder + "x.jpg", jpeg_bytes())
    accept(aws, folder + "x.jpg", folder + "x.json", folder + "x.jpg")  # both events, one of them twice
    notices, runs = outcomes(aws, folder + "x.jpg")
    assert (len(notices), len(runs)) in ((1, 0), (0, 1)), (sidecar, notices, runs)
    if notices:
        assert notices[0]["error"]["code"] == "INVALID_SIDECAR" and notices[0]["error"]["message"]
    else:  # what was accepted can be told later: its request holds only text a notice can carry
        json.dumps(execution_input(aws, runs[0])["job"]["request"], ensure_ascii=False).encode("utf-8")
    assert novita_calls() == []  # acceptance never pays; a refused job has no execution to pay in


@given(name=st.lists(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF and c not in "/"), max_size=12).map("".join))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_image_name_ends_in_one_notice_or_one_execution(aws: Aws, name: str) -> None:
    key = f"incoming/any-name/{next(_examples)}/{name}.jpg"
    put(aws, key, jpeg_bytes())
    sidecar = key[: -len(".jpg")] + ".txt"
    put(aws, sidecar, "a cat yawns")
    accept(aws, key, sidecar, key)  # the image's event, its sidecar's, and the image's again
    notices, runs = outcomes(aws, key)
    assert (len(notices), len(runs)) in ((1, 0), (0, 1)), (name, notices, runs)
    if notices:
        assert notices[0]["error"]["code"] == "UNSUPPORTED_IMAGE", notices[0]["error"]


def test_duplicate_events_start_one_execution(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[str] = []
    real = clients.client("stepfunctions").start_execution

    def recorded(**kwargs: Any) -> Any:
        try:
            answer = real(**kwargs)
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
            raise
        outcomes.append("started")
        return answer

    monkeypatch.setattr(clients.client("stepfunctions"), "start_execution", recorded)
    put(aws, "incoming/dup.txt", "p")
    put(aws, "incoming/dup.jpg", jpeg_bytes())
    assert accept(aws, "incoming/dup.jpg") == {"batchItemFailures": []}
    time.sleep(0.002)  # a later acceptance: its input differs, so Step Functions refuses the name
    assert accept(aws, "incoming/dup.jpg", "incoming/dup.txt") == {"batchItemFailures": []}
    # the third start may land in the same millisecond as the second: then its input is the same, and Step Functions
    # answers with the running execution instead of ExecutionAlreadyExists; either way nothing new starts
    assert outcomes[:2] == ["started", "ExecutionAlreadyExists"] and len(outcomes) == 3
    assert len(executions(aws)) == 1 and aws.notices() == []


@responses.activate
def test_unexpected_error_is_redelivered_then_becomes_an_internal_notice_on_the_last_delivery(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(accept_module, "start_execution", broken)
    put(aws, "incoming/crash.txt", "p")
    put(aws, "incoming/crash.jpg", jpeg_bytes())
    first = accept(aws, "incoming/crash.jpg", receive_count=1)
    assert first["batchItemFailures"] == [{"itemIdentifier": "m0"}] and aws.notices() == []
    last = accept(aws, "incoming/crash.jpg", receive_count=5)  # the UploadQueue's maxReceiveCount
    assert last == {"batchItemFailures": []}
    [notice] = aws.notices()
    assert notice["error"]["code"] == "INTERNAL" and "after 5 attempts" in notice["error"]["message"]
    assert notice["error"]["stage"] == "submit" and executions(aws) == [] and novita_calls() == []


def test_a_transient_s3_error_is_requeued_with_backoff_not_failed(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    put(aws, "incoming/slow.txt", "p")
    put(aws, "incoming/slow.jpg", jpeg_bytes())
    sent = spy(monkeypatch, "sqs", "send_message")
    failing(monkeypatch, "s3", "get_object", aws_error("SlowDown", 503, "GetObject"), times=1)

    assert accept(aws, "incoming/slow.jpg") == {"batchItemFailures": []}
    [(body, delay)] = requeued(sent, aws.stack.id("UploadQueue"))
    assert body["img2video"]["attempt"] == 1 and body["img2video"]["reason"] == "aws-retry" and 1 <= delay <= 900
    assert executions(aws) == [] and aws.notices() == []

    # the re-check, S3 well again: accepted
    assert invoke(aws, "AcceptFunction", sqs_event(body)) == {"batchItemFailures": []}
    assert len(executions(aws)) == 1 and aws.notices() == []


def test_an_aws_fault_that_outlasts_every_recheck_becomes_an_internal_notice(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    put(aws, "incoming/down.txt", "p")
    put(aws, "incoming/down.jpg", jpeg_bytes())
    failing(monkeypatch, "stepfunctions", "start_execution", aws_error("ThrottlingException", 400, "StartExecution"))
    assert recheck(aws, "incoming/down.jpg", time.time(), attempt=accept_module.ACCEPT_RETRIES, reason="aws-retry") == {
        "batchItemFailures": []
    }
    [notice] = aws.notices()
    assert notice["error"]["code"] == "INTERNAL" and "could not be accepted" in notice["error"]["message"]


def test_a_passing_pipeline_fault_is_looked_at_again_only_as_often_as_an_aws_fault(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """One rule for every passing fault at acceptance, with its cap: a transient pipeline error (an image read cut
    short) that never passes ends in a notice naming it, like an AWS fault, instead of being re-queued for ever."""
    put(aws, "incoming/cut.txt", "p")
    put(aws, "incoming/cut.jpg", jpeg_bytes())
    sent = spy(monkeypatch, "sqs", "send_message")
    monkeypatch.setattr(accept_module, "_validated_image", mock.Mock(side_effect=DownloadInterrupted("the image read was cut short")))

    assert recheck(aws, "incoming/cut.jpg", time.time(), attempt=1, reason="aws-retry") == {"batchItemFailures": []}
    assert len(requeued(sent, aws.stack.id("UploadQueue"))) == 1 and aws.notices() == []
    assert recheck(aws, "incoming/cut.jpg", time.time(), attempt=accept_module.ACCEPT_RETRIES, reason="aws-retry") == {
        "batchItemFailures": []
    }
    assert len(requeued(sent, aws.stack.id("UploadQueue"))) == 1
    [notice] = aws.notices()
    assert notice["error"]["code"] == "DOWNLOAD_FAILED" and "cut short" in notice["error"]["message"]


def test_a_transient_listing_fault_is_requeued_with_backoff_not_left_to_the_dead_letter_queue(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(aws, "incoming/list.txt", "p")
    put(aws, "incoming/list.jpg", jpeg_bytes())
    sent = spy(monkeypatch, "sqs", "send_message")
    failing(monkeypatch, "s3", "list_objects_v2", aws_error("SlowDown", 503, "ListObjectsV2"))

    last = accept(aws, "incoming/list.jpg", receive_count=5)
    assert last == {"batchItemFailures": []} and (requeued(sent, aws.stack.id("UploadQueue")) or aws.notices()), (
        "PRODUCT BUG (layers/img2video/img2video/steps/accept.py, handle_trigger): a passing S3 fault in _siblings() "
        "(ListObjectsV2, called before _outcome's try) is raised out of the record instead of being re-queued with "
        "backoff; on the UploadQueue's last delivery the upload goes to the dead-letter queue and the user gets no notice "
        f"(batch answer {last})"
    )


def test_a_record_that_might_not_finish_in_time_is_handed_back_untouched(aws: Aws) -> None:
    for stem in ("early", "late"):
        put(aws, f"incoming/{stem}.txt", "p")
        put(aws, f"incoming/{stem}.jpg", jpeg_bytes())
    event = sqs_event(*(s3_event(aws.input_bucket, f"incoming/{stem}.jpg", now_iso()) for stem in ("early", "late")))
    short = context(aws, "AcceptFunction", seconds=accept_module.ACCEPT_RECORD_WORST_SECONDS - 1)
    # the first record always fits (the template's timeout covers its worst case); a second one might not
    assert handler(aws, "AcceptFunction")(event, short) == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert len(executions(aws)) == 1 and aws.notices() == []
    # on its last delivery it is processed whatever the time left: better a try than the dead-letter queue
    last = sqs_event(*(s3_event(aws.input_bucket, f"incoming/{stem}.jpg", now_iso()) for stem in ("early", "late")), receive_count=5)
    assert handler(aws, "AcceptFunction")(last, short) == {"batchItemFailures": []}
    assert len(executions(aws)) == 2


# -- Submit --------------------------------------------------------------------------------------------------
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


@pytest.fixture
def answers(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Answers:
    return Answers(monkeypatch, aws)


@responses.activate
def test_submit_posts_once_with_a_presigned_image_and_answers_the_task(aws: Aws, answers: Answers) -> None:
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


@pytest.fixture
def own_retries_not_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttled job's own retry is due in a minute or more, not in 1-4 s: what the line does is then seen whatever
    this machine's speed (the retries became visible beside the woken job on a loaded machine)."""
    real = submit_module.backoff_seconds
    monkeypatch.setattr(submit_module, "backoff_seconds", lambda *args, **kwargs: max(60.0, real(*args, **kwargs)))


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


# The real state machine in moto: SubmitToNovita sends the message with a real task token.
@pytest.fixture
def aws_running(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Like conftest's `aws`, but moto runs the state machine, so SubmitToNovita puts a real task token on the SubmitQueue."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        stack = provision(Template.load({"NovitaBaseUrl": NOVITA, "SidecarGraceSeconds": "60"}), API_KEY)
        for name, value in stack.environment.items():
            monkeypatch.setenv(name, value)
        # the first poll waits an hour: the execution stays in WaitForVideo, never calling a Lambda function moto does not have
        monkeypatch.setenv("POLL_MIN_SECONDS", "3600")
        monkeypatch.setenv("POLL_MAX_SECONDS", "3600")
        clients.reset()
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="test-notices")["QueueUrl"]
        yield Aws(stack, boto3.client("s3", region_name=REGION), sqs, boto3.client("stepfunctions", region_name=REGION), queue)


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
def test_submit_answers_the_real_task_token_and_the_execution_moves_on(aws_running: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
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


# -- Poll ----------------------------------------------------------------------------------------------------
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


@responses.activate
def test_poll_of_a_running_task_waits_about_as_long_as_the_eta_says(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING", eta="30", progress_percent=40))
    answer = poll(aws, state_dict())
    assert answer["status"] == "running" and answer["polls"] == 1 and answer["progress_percent"] == 40
    assert answer["wait_seconds"] == 20  # the eta's lower end (30 s / 1.5): no poll can see the task done before
    [call] = novita_calls(RESULT_URL)
    assert "task_id=task-1" in call.request.url and call.request.headers["Authorization"] == f"Bearer {API_KEY}"


@responses.activate
def test_poll_waits_stay_within_bounds(aws: Aws) -> None:
    cases: list[tuple[dict[str, Any], int | None]] = [
        ({"eta": "100000"}, 5),
        ({}, 50),
        ({"progress_percent": 0.001}, 5),
        ({}, None),
        ({"eta": "0.1"}, 5),
    ]
    for task, previous in cases:
        responses.upsert(responses.GET, RESULT_URL, json=result("TASK_STATUS_QUEUED", **task))
        answer = poll(aws, state_dict(poll={"status": "running", "polls": 3, "wait_seconds": previous}))
        assert answer["status"] == "running" and answer["polls"] == 4, task
        # POLL_MIN_SECONDS .. POLL_MAX_SECONDS, or less only when the eta says the task is done by then for sure
        least = 1 if task.get("eta") == "0.1" else 5
        assert least <= answer["wait_seconds"] <= 60, (task, previous, answer)
    # off-peak tasks may wait longer between polls, up to POLL_MAX_SECONDS_OFF_PEAK
    responses.upsert(responses.GET, RESULT_URL, json=result("TASK_STATUS_QUEUED", eta="100000"))
    state = state_dict(job_dict(off_peak=True), poll={"status": "running", "polls": 3, "wait_seconds": 5})
    state["submitted"]["deadline"] = time.time() + 86400
    assert poll(aws, state)["wait_seconds"] == 900


@responses.activate
def test_poll_reports_success(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED", progress_percent=100))
    answer = poll(aws, state_dict(poll={"status": "running", "polls": 2, "wait_seconds": 8}))
    assert answer["status"] == "succeeded" and answer["polls"] == 3 and answer["finished_at"] and answer["progress_percent"] == 100


@responses.activate
def test_poll_of_a_failed_task_raises_provider_failed_with_the_reason(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_FAILED", reason="image violates policy"))
    with pytest.raises(ProviderFailed, match="image violates policy"):
        poll(aws, state_dict())


@responses.activate
def test_poll_past_the_deadline_raises_provider_timeout(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING", progress_percent=42))
    state = state_dict()
    state["submitted"]["deadline"] = time.time() - 1
    with pytest.raises(ProviderTimeout, match=r"not finished after 30 minutes .*42% done"):
        poll(aws, state)


@responses.activate
def test_polls_reaching_max_polls_raise_provider_timeout_whatever_the_deadline(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING", progress_percent=10))
    state = state_dict(poll={"status": "running", "polls": MAX_POLLS - 1, "wait_seconds": 60})
    state["submitted"]["deadline"] = time.time() + 86400
    with pytest.raises(ProviderTimeout, match=f"{MAX_POLLS} polls"):
        poll(aws, state)
    # one poll short of the limit, the last wait reaches the deadline instead of running out of polls
    responses.replace(responses.GET, RESULT_URL, json=result("TASK_STATUS_PROCESSING", progress_percent=10))
    answer = poll(aws, state_dict(poll={"status": "running", "polls": MAX_POLLS - 2, "wait_seconds": 60}))
    assert answer["polls"] == MAX_POLLS - 1 and answer["wait_seconds"] >= 500


@responses.activate
def test_a_busy_provider_is_a_poll_that_learned_nothing_not_an_error(aws: Aws) -> None:
    for status, retry_after, least, previous in [(429, "45", 45, "running"), (503, None, 8, "running"), (429, "30", 30, "submitted")]:
        headers = {"Retry-After": retry_after} if retry_after else {}
        responses.upsert(responses.GET, RESULT_URL, status=status, json={"message": "busy"}, headers=headers)
        before = len(novita_calls(RESULT_URL))
        answer = poll(aws, state_dict(poll={"status": previous, "polls": 2, "progress_percent": 20, "wait_seconds": 5}))
        assert len(novita_calls(RESULT_URL)) == before + 1, status  # one attempt, no sleeping in the function
        assert answer["status"] == previous, status  # not "succeeded": the Choice sends it back to WaitForVideo
        assert answer["polls"] == 3 and answer["progress_percent"] == 20 and "busy" in answer["last_error"], answer
        assert answer["wait_seconds"] >= least, (status, retry_after, answer)


@responses.activate
def test_a_503_with_retry_after_is_honoured_too(aws: Aws) -> None:
    responses.get(RESULT_URL, status=503, json={"message": "maintenance"}, headers={"Retry-After": "120"})
    answer = poll(aws, state_dict(poll={"status": "running", "polls": 2, "progress_percent": 20, "wait_seconds": 5}))
    assert len(novita_calls(RESULT_URL)) == 1 and answer["status"] == "running"
    assert answer["wait_seconds"] >= 120, (
        f"PRODUCT BUG: a 503 answer with Retry-After: 120 gave a wait of {answer['wait_seconds']} s. "
        "novita_errors.classify_http_error keeps Retry-After only for ProviderThrottled (429), and poll.poll_task reads it only "
        "from ProviderThrottled, so a 503's Retry-After is dropped and the next poll comes too early"
    )


@responses.activate
def test_a_busy_provider_past_the_deadline_ends_in_provider_timeout(aws: Aws) -> None:
    responses.get(RESULT_URL, status=503, json={"message": "down"})
    state = state_dict()
    state["submitted"]["deadline"] = time.time() - 1
    with pytest.raises(ProviderTimeout, match="did not answer the last poll"):
        poll(aws, state)


# -- Store ---------------------------------------------------------------------------------------------------
@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]  # an address stays itself, as getaddrinfo answers
        except ValueError:
            return ["93.184.216.34"]

    monkeypatch.setattr(video_transfer, "_resolve", resolve)


def store_state(aws: Aws) -> dict[str, Any]:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    job = job_dict(aws.input_bucket, tags={"team": "cats"})
    return state_dict(job, poll={"status": "succeeded", "polls": 3, "progress_percent": 100, "finished_at": now_iso()})


def store(aws: Aws, state: dict[str, Any]) -> dict[str, Any]:
    return invoke(aws, "StoreFunction", state)  # type: ignore[no-any-return]


def output_keys(aws: Aws) -> list[str]:
    return [item["Key"] for item in aws.s3.list_objects_v2(Bucket=aws.output_bucket).get("Contents", [])]


def manifest(aws: Aws) -> dict[str, Any]:
    return json.loads(aws.s3.get_object(Bucket=aws.output_bucket, Key="videos/cat.json")["Body"].read())  # type: ignore[no-any-return]


@responses.activate
def test_store_streams_the_video_and_writes_its_manifest_once(aws: Aws, public_dns: None) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
    state = store_state(aws)
    answer = store(aws, state)

    stored = aws.s3.get_object(Bucket=aws.output_bucket, Key="videos/cat.mp4")
    assert stored["Body"].read() == VIDEO and stored["ContentType"] == "video/mp4"
    assert stored["Metadata"] == {"job-id": JOB_ID, "task-id": "task-1"}
    written = manifest(aws)
    assert written["video"] == {
        "bucket": aws.output_bucket,
        "key": "videos/cat.mp4",
        "size_bytes": len(VIDEO),
        "sha256": hashlib.sha256(VIDEO).hexdigest(),
    }
    assert answer["sha256"] == hashlib.sha256(VIDEO).hexdigest() and answer["size_bytes"] == len(VIDEO)
    assert (answer["video_key"], answer["manifest_key"]) == ("videos/cat.mp4", "videos/cat.json")
    assert written["job_id"] == JOB_ID and written["task_id"] == "task-1" and written["provider_seed"] == "42"
    assert written["request"]["images"] == [f"s3://{aws.input_bucket}/incoming/cat.jpg"] and written["timings"]["polls"] == 3
    assert written["tags"] == {"team": "cats"}
    assert aws.notices() == []  # the notice is PublishNotice's, never Store's

    # a retried step after success: nothing fetched again, the same answer
    calls = len(responses.calls)
    again = store(aws, state)
    assert len(responses.calls) == calls and len(novita_calls(VIDEO_URL)) == 1
    assert {k: v for k, v in again.items() if k != "stored_at"} == {k: v for k, v in answer.items() if k != "stored_at"}
    assert aws.notices() == []


@responses.activate
def test_a_retried_store_keeps_the_manifest_it_wrote(aws: Aws, public_dns: None) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
    state = store_state(aws)
    store(aws, state)
    first = manifest(aws)
    store(aws, state)  # e.g. StoreVideo's answer was lost and the state retried it
    again = manifest(aws)
    assert again["provider_seed"] == first["provider_seed"] == "42", (
        "PRODUCT BUG (layers/img2video/img2video/steps/store.py, store_video): when a complete manifest of this job is already "
        "in S3, _already_stored returns only its size and hash, provider_seed stays None, and the manifest is written "
        f"again without the provider's seed (was {first['provider_seed']!r}, now {again['provider_seed']!r}); its "
        "timings.stored changes too. A retried Store should leave a complete manifest as it is."
    )


@responses.activate
def test_a_video_stored_without_its_manifest_is_hashed_from_s3_not_downloaded_again(aws: Aws, public_dns: None) -> None:
    aws.s3.put_object(
        Bucket=aws.output_bucket,
        Key="videos/cat.mp4",
        Body=VIDEO,
        ContentType="video/mp4",
        Metadata={"job-id": JOB_ID, "task-id": "task-1"},
    )
    answer = store(aws, store_state(aws))
    assert [c.request.url for c in responses.calls] == []  # neither Novita nor the video host
    assert answer["sha256"] == hashlib.sha256(VIDEO).hexdigest() and answer["size_bytes"] == len(VIDEO)
    assert manifest(aws)["video"]["sha256"] == hashlib.sha256(VIDEO).hexdigest()


@responses.activate
def test_another_jobs_video_under_the_same_name_is_replaced(aws: Aws, public_dns: None) -> None:
    aws.s3.put_object(Bucket=aws.output_bucket, Key="videos/cat.mp4", Body=b"old", Metadata={"job-id": "cat-older", "task-id": "t0"})
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
    store(aws, store_state(aws))
    assert aws.s3.get_object(Bucket=aws.output_bucket, Key="videos/cat.mp4")["Body"].read() == VIDEO
    assert len(novita_calls(VIDEO_URL)) == 1


@responses.activate
def test_a_truncated_download_leaves_nothing_behind_and_is_retryable(aws: Aws, public_dns: None) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, body=VIDEO[:100], headers={"Content-Length": str(len(VIDEO))}, auto_calculate_content_length=False)
    with pytest.raises(DownloadInterrupted):
        store(aws, store_state(aws))
    assert output_keys(aws) == []
    assert aws.s3.list_multipart_uploads(Bucket=aws.output_bucket).get("Uploads", []) == []
    assert aws.notices() == []


@responses.activate
def test_refused_video_urls_fail_with_download_failed(aws: Aws, public_dns: None) -> None:
    state = store_state(aws)
    cases = {
        "http": ("http://videos.novita.test/v.mp4", None, "only https is allowed"),
        "private-address": ("https://10.0.0.5/v.mp4", None, "non-public address"),
        "redirect-to-private": (VIDEO_URL, "https://169.254.169.254/latest/meta-data", "non-public address"),
        "redirect-to-http": (VIDEO_URL, "http://169.254.169.254/latest/meta-data", "only https is allowed"),
    }
    for name, (video_url, location, fragment) in cases.items():
        responses.upsert(responses.GET, RESULT_URL, json=result("TASK_STATUS_SUCCEED", video_url=video_url))
        if location:
            responses.upsert(responses.GET, VIDEO_URL, status=302, headers={"Location": location})
        with pytest.raises(DownloadFailed, match=fragment):
            store(aws, state)
        assert output_keys(aws) == [], name
    assert [url for c in responses.calls if (url := c.request.url or "") and ("169.254" in url or "10.0.0.5" in url)] == []
    assert aws.s3.list_multipart_uploads(Bucket=aws.output_bucket).get("Uploads", []) == []


@responses.activate
def test_a_task_without_a_video_is_retried_not_stored(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING"))
    with pytest.raises(DownloadInterrupted, match="no video"):
        store(aws, store_state(aws))
    assert output_keys(aws) == []


@responses.activate
def test_store_downloads_from_the_url_the_poll_just_read_and_keeps_novitas_generation_time(aws: Aws, public_dns: None) -> None:
    """One Task Result call per job: the poll that saw the task done leaves its video URL (and Novita's timestamps) for
    Store. The kind's history gets the task's time by Novita's clock (61.5 s), not when the poll happened to look (60 s
    after submit here, or 100 s after a long wait): a late look must not make later jobs wait longer."""
    finished = result("TASK_STATUS_SUCCEED")
    finished["extra"]["debug_info"] = {"submit_time_ms": "1764000000000", "complete_time_ms": "1764000061500"}
    responses.get(RESULT_URL, json=finished)
    responses.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
    state = store_state(aws)
    state["poll"] = poll(aws, state)
    assert state["poll"]["status"] == "succeeded"
    store(aws, state)
    assert len(novita_calls(RESULT_URL)) == 1 and len(novita_calls(VIDEO_URL)) == 1
    assert manifest(aws)["provider_seed"] == "42"
    assert jobs_table.kind_history(history_key("vidu-q2-turbo-img2video", "720p", 5, False)).samples == [61.5]


@responses.activate
def test_a_remembered_url_that_fails_is_tried_once_then_store_asks_novita_again(aws: Aws, public_dns: None) -> None:
    stale = "https://videos.novita.test/v/stale.mp4"
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED", video_url=stale))
    responses.get(stale, status=403)
    state = store_state(aws)
    state["poll"] = poll(aws, state)
    with pytest.raises(DownloadInterrupted, match="403"):  # StoreVideo's Retry runs it again
        store(aws, state)
    responses.replace(responses.GET, RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
    store(aws, state)
    assert len(novita_calls(RESULT_URL)) == 2 and len(novita_calls(stale)) == 1
    assert aws.s3.get_object(Bucket=aws.output_bucket, Key="videos/cat.mp4")["Body"].read() == VIDEO


# -- Publish -------------------------------------------------------------------------------------------------
def publish_state(aws: Aws, **overrides: Any) -> dict[str, Any]:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    return state_dict(job_dict(aws.input_bucket, tags={"team": "cats"}), **overrides)


@pytest.fixture
def stored_state(aws: Aws, public_dns: None) -> Iterator[dict[str, Any]]:
    """A job whose Store step finished: the state PublishNotice gets on the success path."""
    with responses.RequestsMock() as novita:
        novita.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
        novita.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
        state = store_state(aws)
        state["stored"] = store(aws, state)
    yield state


def failed(stage: str, error: str, message: str) -> dict[str, Any]:
    return {"stage": stage, "error": {"Error": error, "Cause": json.dumps({"errorType": error, "errorMessage": message})}}


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
