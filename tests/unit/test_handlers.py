"""Each Lambda handler against moto (AWS) and responses (Novita), as a user of the bucket would see it."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
import responses
from img2video import video_transfer
from img2video.errors import DownloadFailed, DownloadInterrupted, ProviderFailed, ProviderTimeout
from img2video_local.lambda_server import load_handler

from tests.conftest import API_KEY, NOVITA, Aws, FakeContext, jpeg_bytes, png_bytes, s3_event, sqs_event

SUBMIT_URL = f"{NOVITA}/v3/async/vidu-q2-turbo-img2video"
RESULT_URL = f"{NOVITA}/v3/async/task-result"
VIDEO_URL = "https://videos.novita.test/v/task-1.mp4?sig=abc"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


def handler(aws: Aws, name: str) -> Any:
    return load_handler(aws.stack.functions[name])


def put(aws: Aws, key: str, body: bytes | str) -> None:
    aws.s3.put_object(Bucket=aws.input_bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)


def submit(aws: Aws, *keys: str, receive_count: int = 1) -> dict[str, Any]:
    event = sqs_event(*(s3_event(aws.input_bucket, key, _now_iso()) for key in keys), receive_count=receive_count)
    return handler(aws, "SubmitFunction")(event, FakeContext())  # type: ignore[no-any-return]


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def executions(aws: Aws) -> list[dict[str, Any]]:
    return aws.sfn.list_executions(stateMachineArn=aws.stack.id("VideoJobStateMachine"))["executions"]


def tags(aws: Aws, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in aws.s3.get_object_tagging(Bucket=aws.input_bucket, Key=key)["TagSet"]}


def queued_messages(aws: Aws) -> list[dict[str, Any]]:
    """The pipeline's own delayed re-checks waiting in the Submit queue (S3's events are there too)."""
    answer = aws.sqs.receive_message(QueueUrl=aws.stack.id("SubmitQueue"), MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [m for m in answer.get("Messages", []) if '"img2video"' in m["Body"]]


def _wait_for_requeued(aws: Aws, seconds: float = 8) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = queued_messages(aws)
        if found:
            assert len(found) == 1
            return found[0]
        time.sleep(0.25)
    raise AssertionError("nothing was re-queued")


# -- Submit --------------------------------------------------------------------------------------------
@responses.activate
def test_image_with_sidecar_is_submitted_once_and_execution_named_after_the_job(aws: Aws) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-1"})
    put(aws, "incoming/a/cat.json", json.dumps({"prompt": "a cat yawns", "resolution": "1080p"}))
    put(aws, "incoming/a/cat.jpg", jpeg_bytes())

    assert submit(aws, "incoming/a/cat.jpg") == {"batchItemFailures": []}
    # the sidecar's own event and a re-delivered image event converge on the same job
    submit(aws, "incoming/a/cat.json", "incoming/a/cat.jpg")

    assert len(responses.calls) == 1
    sent = json.loads(responses.calls[0].request.body)
    assert sent["prompt"] == "a cat yawns" and sent["resolution"] == "1080p" and sent["duration"] == 5
    assert sent["images"][0].startswith("https://") and "cat.jpg" in sent["images"][0]
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {API_KEY}"
    runs = executions(aws)
    assert len(runs) == 1 and runs[0]["name"].startswith("cat-")
    state = json.loads(aws.sfn.describe_execution(executionArn=runs[0]["executionArn"])["input"])
    assert state["task_id"] == "task-1" and state["job"]["video_key"] == "videos/a/cat.mp4"
    assert tags(aws, "incoming/a/cat.jpg") == {"img2video-status": "submitted", "img2video-job": runs[0]["name"]}
    assert aws.notices() == []


@responses.activate
def test_keys_with_spaces_plus_and_unicode_are_found(aws: Aws) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "task-2"})
    key = "incoming/my photos/été + 100%.JPG"
    put(aws, "incoming/my photos/été + 100%.txt", "Snow falls")
    put(aws, key, jpeg_bytes())
    submit(aws, key)
    assert len(responses.calls) == 1 and json.loads(responses.calls[0].request.body)["prompt"] == "Snow falls"
    state = json.loads(aws.sfn.describe_execution(executionArn=executions(aws)[0]["executionArn"])["input"])
    assert state["job"]["source"]["key"] == key and state["job"]["video_key"] == "videos/my photos/été + 100%.mp4"


@responses.activate
def test_image_and_sidecar_pair_across_unicode_normalizations(aws: Aws) -> None:
    import unicodedata

    responses.post(SUBMIT_URL, json={"task_id": "t"})
    image = unicodedata.normalize("NFD", "incoming/café/crème.jpg")  # as some macOS tools write it
    sidecar = unicodedata.normalize("NFC", "incoming/café/crème.txt")
    assert image[:-4] != sidecar[:-4]
    put(aws, image, jpeg_bytes())
    put(aws, sidecar, "steam rises")
    submit(aws, image)
    assert json.loads(responses.calls[0].request.body)["prompt"] == "steam rises"
    assert len(executions(aws)) == 1


@responses.activate
def test_json_sidecar_wins_over_txt(aws: Aws) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    put(aws, "incoming/dog.txt", "from txt")
    put(aws, "incoming/dog.json", json.dumps({"prompt": "from json"}))
    put(aws, "incoming/dog.png", b"")  # replaced below: the pairing must use the current objects
    put(aws, "incoming/dog.png", png_bytes())
    submit(aws, "incoming/dog.png")
    assert json.loads(responses.calls[0].request.body)["prompt"] == "from json"


@responses.activate
def test_images_sharing_a_name_get_videos_that_do_not_overwrite_each_other(aws: Aws) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    put(aws, "incoming/twin.jpg", jpeg_bytes())
    put(aws, "incoming/twin.png", png_bytes())
    put(aws, "incoming/twin.txt", "both of us")
    submit(aws, "incoming/twin.txt")
    keys = sorted(
        json.loads(aws.sfn.describe_execution(executionArn=run["executionArn"])["input"])["job"]["video_key"] for run in executions(aws)
    )
    assert keys == ["videos/twin-jpg.mp4", "videos/twin-png.mp4"] and len(responses.calls) == 2


@responses.activate
def test_image_without_sidecar_waits_then_fails_with_missing_sidecar(aws: Aws) -> None:
    put(aws, "incoming/lonely.jpg", jpeg_bytes())
    submit(aws, "incoming/lonely.jpg")
    waiting = queued_messages(aws)
    assert len(waiting) == 0  # delayed by the grace period: not visible yet
    assert tags(aws, "incoming/lonely.jpg")["img2video-status"] == "queued"
    assert aws.notices() == []

    # the delayed re-check, once the grace period is over
    recheck = {
        "img2video": {
            "bucket": aws.input_bucket,
            "key": "incoming/lonely.jpg",
            "first_seen": time.time() - 61,
            "attempt": 0,
            "reason": "await-sidecar",
        }
    }
    handler(aws, "SubmitFunction")(sqs_event(recheck), FakeContext())
    [notice] = aws.notices()
    assert notice["event"] == "video.failed" and notice["error"]["code"] == "MISSING_SIDECAR"
    assert "incoming/lonely.json or incoming/lonely.txt" in notice["error"]["message"]
    assert notice["_attributes"]["event"] == "video.failed"
    assert len(responses.calls) == 0 and executions(aws) == []
    assert tags(aws, "incoming/lonely.jpg")["img2video-status"] == "failed"


@responses.activate
def test_sidecar_arriving_after_the_image_starts_the_job(aws: Aws) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    put(aws, "incoming/late.jpg", jpeg_bytes())
    submit(aws, "incoming/late.jpg")
    put(aws, "incoming/late.txt", "late prompt")
    submit(aws, "incoming/late.txt")
    assert len(responses.calls) == 1 and len(executions(aws)) == 1


def test_sidecar_without_image_starts_nothing_and_notifies_nobody(aws: Aws) -> None:
    put(aws, "incoming/orphan.json", json.dumps({"prompt": "p"}))
    assert submit(aws, "incoming/orphan.json") == {"batchItemFailures": []}
    assert executions(aws) == [] and aws.notices() == []


@pytest.mark.parametrize("key", ["incoming/a/../b.jpg", "incoming/./c.png", "incoming/d//e.jpg"])
def test_image_keys_that_climb_or_hide_get_a_notice_not_a_job(aws: Aws, key: str) -> None:
    put(aws, key, jpeg_bytes())
    submit(aws, key)
    [notice] = aws.notices()
    assert notice["error"]["code"] == "UNSUPPORTED_IMAGE" and "'..' folder name" in notice["error"]["message"]
    assert notice["source"]["key"] == key and executions(aws) == []


def test_s3_test_event_is_ignored(aws: Aws) -> None:
    body = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": aws.input_bucket}
    assert handler(aws, "SubmitFunction")(sqs_event(body), FakeContext()) == {"batchItemFailures": []}
    assert aws.notices() == []


@pytest.mark.parametrize(
    ("sidecar", "image", "code", "fragment"),
    [
        ('{"prompt": "x", "durration": 5}', jpeg_bytes(), "INVALID_SIDECAR", 'did you mean "duration"?'),
        ('{"prompt": "x", "extra_images": ["../../secret/x.jpg"]}', jpeg_bytes(), "INVALID_SIDECAR", "must name a .jpg"),
        ('{"prompt": "x", "extra_images": ["missing.jpg"]}', jpeg_bytes(), "INVALID_SIDECAR", "does not exist"),
        ('{"prompt": "x"}', b"", "UNSUPPORTED_IMAGE", "is empty (0 bytes)"),
        ('{"prompt": "x"}', b"GIF89a not really", "UNSUPPORTED_IMAGE", "is not a JPEG, PNG or WebP image"),
        ("x" * 70000, jpeg_bytes(), "INVALID_SIDECAR", "a sidecar may be at most 65536 bytes"),
    ],
)
@responses.activate
def test_bad_input_ends_in_one_failure_notice_and_nothing_is_lost(aws: Aws, sidecar: str, image: bytes, code: str, fragment: str) -> None:
    put(aws, "incoming/bad.json", sidecar)
    put(aws, "incoming/bad.jpg", image)
    assert submit(aws, "incoming/bad.jpg") == {"batchItemFailures": []}  # no retry storm
    submit(aws, "incoming/bad.json")  # the sidecar's event: the same job, no second notice
    [notice] = aws.notices()
    assert notice["error"]["code"] == code and fragment in notice["error"]["message"]
    assert notice["error"]["stage"] == "submit" and notice["video"] is None
    assert notice["notice_id"] == f"{notice['job_id']}:failed"
    assert len(responses.calls) == 0
    # inputs are never deleted or rewritten
    assert aws.s3.get_object(Bucket=aws.input_bucket, Key="incoming/bad.jpg")["Body"].read() == image


@responses.activate
def test_throttled_submit_is_requeued_not_failed(aws: Aws) -> None:
    responses.post(SUBMIT_URL, status=429, json={"message": "too many"}, headers={"Retry-After": "0"})
    put(aws, "incoming/busy.txt", "p")
    put(aws, "incoming/busy.jpg", jpeg_bytes())
    assert submit(aws, "incoming/busy.jpg") == {"batchItemFailures": []}
    assert aws.notices() == [] and executions(aws) == []
    message = _wait_for_requeued(aws)
    trigger = json.loads(message["Body"])["img2video"]
    assert trigger["attempt"] == 1 and trigger["reason"] == "provider-busy"

    # when Novita has room again, the retry submits (the failed attempt left no idempotency record behind)
    responses.replace(responses.POST, SUBMIT_URL, json={"task_id": "t-after"})
    handler(aws, "SubmitFunction")(sqs_event(message["Body"]), FakeContext())
    assert len(executions(aws)) == 1


@responses.activate
def test_bad_api_key_fails_fast_and_the_key_never_appears(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    responses.post(SUBMIT_URL, status=401, json={"message": f"invalid key {API_KEY}"})
    put(aws, "incoming/k.txt", "p")
    put(aws, "incoming/k.jpg", jpeg_bytes())
    submit(aws, "incoming/k.jpg")
    [notice] = aws.notices()
    assert notice["error"]["code"] == "PROVIDER_AUTH"
    assert API_KEY not in json.dumps(notice)
    captured = capsys.readouterr()
    assert API_KEY not in captured.out + captured.err


@responses.activate
def test_unexpected_error_on_the_last_delivery_becomes_a_notice(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    import img2video.submit as submit_module

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(submit_module, "start_execution", broken)
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    put(aws, "incoming/crash.txt", "p")
    put(aws, "incoming/crash.jpg", jpeg_bytes())
    first = submit(aws, "incoming/crash.jpg", receive_count=1)
    assert first["batchItemFailures"] == [{"itemIdentifier": "m0"}] and aws.notices() == []
    last = submit(aws, "incoming/crash.jpg", receive_count=5)
    assert last == {"batchItemFailures": []}
    [notice] = aws.notices()
    assert notice["error"]["code"] == "INTERNAL" and "after 5 attempts" in notice["error"]["message"]
    assert len(responses.calls) == 1  # the retry reused the first task: nothing paid twice


@responses.activate
def test_default_prompt_covers_images_without_sidecar(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from img2video.clients import reset

    monkeypatch.setenv("DEFAULT_PROMPT", "Bring it to life")
    monkeypatch.setenv("SIDECAR_GRACE_SECONDS", "0")
    reset()
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    put(aws, "incoming/plain.jpg", jpeg_bytes())
    submit(aws, "incoming/plain.jpg")
    assert json.loads(responses.calls[0].request.body)["prompt"] == "Bring it to life"


@responses.activate
def test_off_peak_images_travel_inline_not_as_expiring_urls(aws: Aws) -> None:
    responses.post(SUBMIT_URL, json={"task_id": "t"})
    put(aws, "incoming/night.json", json.dumps({"prompt": "p", "off_peak": True}))
    put(aws, "incoming/night.jpg", jpeg_bytes())
    submit(aws, "incoming/night.jpg")
    sent = json.loads(responses.calls[0].request.body)
    assert sent["off_peak"] is True and sent["images"][0].startswith("data:image/jpeg;base64,")


# -- Poll ------------------------------------------------------------------------------------------------
def _state(**overrides: Any) -> dict[str, Any]:
    job = {
        "job_id": "cat-0123456789",
        "source": {"bucket": "in", "key": "incoming/cat.jpg", "etag": "e"},
        "request": {"prompt": "p", "duration": 5, "resolution": "720p", "movement_amplitude": "auto", "off_peak": False},
        "video_key": "videos/cat.mp4",
        "manifest_key": "videos/cat.json",
    }
    state = {
        "job": job,
        "task_id": "task-1",
        "submitted_at": _now_iso(),
        "deadline": time.time() + 600,
        "poll": {"status": "submitted", "polls": 0, "wait_seconds": 5},
    }
    state.update(overrides)
    return state


def _result(status: str, **task: Any) -> dict[str, Any]:
    videos = [{"video_url": VIDEO_URL, "video_url_ttl": "3600", "video_type": "mp4"}] if status == "TASK_STATUS_SUCCEED" else []
    return {"task": {"task_id": "task-1", "status": status, **task}, "videos": videos, "extra": {"seed": "42"}}


@responses.activate
def test_poll_uses_the_providers_eta(aws: Aws) -> None:
    responses.get(RESULT_URL, json=_result("TASK_STATUS_PROCESSING", eta="30", progress_percent=40))
    answer = handler(aws, "PollFunction")(_state(), FakeContext())
    assert answer["status"] == "running" and answer["wait_seconds"] == 24 and answer["polls"] == 1


@responses.activate
def test_poll_reports_success(aws: Aws) -> None:
    responses.get(RESULT_URL, json=_result("TASK_STATUS_SUCCEED", progress_percent=100))
    answer = handler(aws, "PollFunction")(_state(), FakeContext())
    assert answer["status"] == "succeeded" and answer["finished_at"]


@responses.activate
def test_poll_raises_provider_failed_with_the_reason(aws: Aws) -> None:
    responses.get(RESULT_URL, json=_result("TASK_STATUS_FAILED", reason="image violates policy"))
    with pytest.raises(ProviderFailed, match="image violates policy"):
        handler(aws, "PollFunction")(_state(), FakeContext())


@responses.activate
def test_poll_past_the_deadline_raises_timeout(aws: Aws) -> None:
    responses.get(RESULT_URL, json=_result("TASK_STATUS_PROCESSING", progress_percent=42))
    with pytest.raises(ProviderTimeout, match=r"not finished after 30 minutes .*42% done"):
        handler(aws, "PollFunction")(_state(deadline=time.time() - 1), FakeContext())


# -- Store ---------------------------------------------------------------------------------------------
@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_transfer, "_resolve", lambda host: ["93.184.216.34"])


def _store_state(aws: Aws) -> dict[str, Any]:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    state = _state()
    state["job"]["source"]["bucket"] = aws.input_bucket
    state["job"]["request"]["tags"] = {"team": "cats"}
    state["poll"] = {"status": "succeeded", "polls": 3, "finished_at": _now_iso()}
    return state


@responses.activate
def test_store_streams_the_video_writes_the_manifest_and_notifies_once(aws: Aws, public_dns: None) -> None:
    responses.get(RESULT_URL, json=_result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
    state = _store_state(aws)
    store = handler(aws, "StoreFunction")
    answer = store(state, FakeContext())
    store(state, FakeContext())  # a retried step: no second download, no second notice

    stored = aws.s3.get_object(Bucket=aws.output_bucket, Key="videos/cat.mp4")
    assert stored["Body"].read() == VIDEO and stored["ContentType"] == "video/mp4"
    assert stored["Metadata"] == {"job-id": "cat-0123456789", "task-id": "task-1"}
    manifest = json.loads(aws.s3.get_object(Bucket=aws.output_bucket, Key="videos/cat.json")["Body"].read())
    assert manifest["video"]["sha256"] == hashlib.sha256(VIDEO).hexdigest() == answer["sha256"]
    assert manifest["request"]["images"] == [f"s3://{aws.input_bucket}/incoming/cat.jpg"] and manifest["timings"]["polls"] == 3
    [notice] = aws.notices()
    assert notice["event"] == "video.succeeded" and notice["video"]["size_bytes"] == len(VIDEO)
    assert notice["tags"] == {"team": "cats"} and notice["_subject"] == "Video ready: cat.mp4"
    assert len([c for c in responses.calls if c.request.url == VIDEO_URL]) == 1
    assert tags(aws, "incoming/cat.jpg")["img2video-status"] == "succeeded"


@responses.activate
def test_truncated_download_leaves_nothing_behind_and_is_retryable(aws: Aws, public_dns: None) -> None:
    responses.get(RESULT_URL, json=_result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, body=VIDEO[:100], headers={"Content-Length": str(len(VIDEO))}, auto_calculate_content_length=False)
    with pytest.raises(DownloadInterrupted):
        handler(aws, "StoreFunction")(_store_state(aws), FakeContext())
    assert aws.s3.list_objects_v2(Bucket=aws.output_bucket).get("KeyCount", 0) == 0
    assert aws.s3.list_multipart_uploads(Bucket=aws.output_bucket).get("Uploads", []) == []
    assert aws.notices() == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("http://videos.novita.test/v.mp4", "only https is allowed"), ("https://10.0.0.5/v.mp4", "non-public address")],
)
def test_video_urls_must_be_public_https(url: str, fragment: str) -> None:
    with pytest.raises(DownloadFailed, match=fragment):
        video_transfer.check_video_url(url, allow_loopback_http=False, resolve=lambda host: ["93.184.216.34"])


@responses.activate
def test_redirect_to_a_private_address_is_refused(aws: Aws, public_dns: None) -> None:
    responses.get(RESULT_URL, json=_result("TASK_STATUS_SUCCEED"))
    responses.get(VIDEO_URL, status=302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    with pytest.raises(DownloadFailed):
        handler(aws, "StoreFunction")(_store_state(aws), FakeContext())


# -- Notify -------------------------------------------------------------------------------------------
def test_notify_publishes_one_failure_notice_even_when_retried(aws: Aws) -> None:
    put(aws, "incoming/cat.jpg", jpeg_bytes())
    state = _state(
        stage="poll",
        error={
            "Error": "ProviderTimeout",
            "Cause": json.dumps({"errorType": "ProviderTimeout", "errorMessage": "the task was not finished after 30 minutes"}),
        },
    )
    state["job"]["source"]["bucket"] = aws.input_bucket
    notify = handler(aws, "NotifyFunction")
    assert notify(state, FakeContext()) == {"notice_id": "cat-0123456789:failed"}
    notify(state, FakeContext())
    [notice] = aws.notices()
    assert notice["error"] == {"code": "PROVIDER_TIMEOUT", "message": "the task was not finished after 30 minutes", "stage": "poll"}
    assert notice["task_id"] == "task-1" and notice["request"]["prompt"] == "p"
