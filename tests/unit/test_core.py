"""Pure decisions: job identity, wait policy, image checks, error mapping, notices."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from img2video.errors import ALL_ERROR_CODES, ERROR_CODES, ImageTooLarge, UnsupportedImage, error_code
from img2video.failure import describe_error
from img2video.images import MAX_IMAGE_BYTES, check_image
from img2video.jobs import StepError, job_id
from img2video.notices import Notice, NoticeError, NoticeVideo, email_text, failure_notice, sns_publish_arguments, subject, success_notice
from img2video.novita import TaskResult, TaskStatus, classify_http_error, provider_message
from img2video.wait_policy import WaitPolicy

from tests.conftest import jpeg_bytes, png_bytes


# -- job identity ---------------------------------------------------------------------------------
def test_same_objects_give_the_same_job_id() -> None:
    a = job_id("b", "incoming/cat.jpg", '"e1"', "incoming/cat.json", "s1", "cat")
    assert a == job_id("b", "incoming/cat.jpg", "e1", "incoming/cat.json", '"s1"', "cat")
    assert a.startswith("cat-") and len(a) == len("cat-") + 10


def test_changed_sidecar_gives_a_new_job() -> None:
    assert job_id("b", "k.jpg", "e", "k.json", "s1", "k") != job_id("b", "k.jpg", "e", "k.json", "s2", "k")


@given(st.text(max_size=200), st.text(max_size=50))
def test_job_id_is_always_a_valid_execution_name(key: str, stem: str) -> None:
    jid = job_id("bucket", key, "etag", "", "", stem)
    assert len(jid) <= 80 and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in jid)


# -- wait policy ----------------------------------------------------------------------------------
POLICY = WaitPolicy(min_seconds=5, max_seconds=60)


def test_eta_is_trusted_within_bounds() -> None:
    assert POLICY.next_wait(previous_wait=5, eta=25) == 20  # a little early rather than late
    assert POLICY.next_wait(previous_wait=5, eta=2) == 5
    assert POLICY.next_wait(previous_wait=5, eta=600) == 60


def test_progress_extrapolates_remaining_time() -> None:
    # 25% done after 20 s → about 60 s left
    assert POLICY.next_wait(previous_wait=5, progress_percent=25, elapsed_seconds=20) == 60
    assert POLICY.next_wait(previous_wait=5, progress_percent=80, elapsed_seconds=40) == 10


def test_without_hints_the_wait_grows_geometrically_to_the_cap() -> None:
    waits, previous = [], None
    for _ in range(8):
        previous = POLICY.next_wait(previous_wait=previous)
        waits.append(previous)
    assert waits[0] == 5 and waits == sorted(waits) and waits[-1] == 60


@given(st.none() | st.integers(0, 10_000), st.none() | st.floats(-5, 1e6), st.none() | st.floats(-5, 200), st.none() | st.floats(0, 1e6))
def test_wait_is_always_clamped(previous: int | None, eta: float | None, progress: float | None, elapsed: float | None) -> None:
    assert 5 <= POLICY.next_wait(previous, eta, progress, elapsed) <= 60


# -- images ---------------------------------------------------------------------------------------
def check(data: bytes, size: int | None = None) -> str:
    return check_image("incoming/x.jpg", len(data) if size is None else size, data[:16], data[-16:])


def test_real_images_pass() -> None:
    assert check(jpeg_bytes()) == "jpeg"
    assert check(png_bytes()) == "png"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "is empty (0 bytes)"),
        (b"hello, I am text pretending to be a jpeg", "is not a JPEG, PNG or WebP image"),
        (jpeg_bytes()[:200], "looks truncated"),
        (png_bytes()[:-20], "looks truncated"),
    ],
)
def test_bad_images_are_named(data: bytes, expected: str) -> None:
    with pytest.raises(UnsupportedImage, match=re.escape(expected)):
        check(data)


def test_oversized_image() -> None:
    with pytest.raises(ImageTooLarge, match="up to 52428800 bytes"):
        check(jpeg_bytes(), size=MAX_IMAGE_BYTES + 1)


# -- provider errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "name", "code"),
    [
        (429, '{"message": "slow down"}', "ProviderThrottled", "PROVIDER_FAILED"),
        (503, "upstream down", "ProviderUnavailable", "PROVIDER_FAILED"),
        (401, '{"reason": "INVALID_API_KEY"}', "ProviderAuth", "PROVIDER_AUTH"),
        (403, "{}", "ProviderAuth", "PROVIDER_AUTH"),
        (400, '{"message": "Insufficient balance, please top up"}', "InsufficientBalance", "INSUFFICIENT_BALANCE"),
        (400, '{"message": "prompt too long", "code": 400}', "ProviderRejected", "PROVIDER_REJECTED"),
        (422, "<html>bad</html>", "ProviderRejected", "PROVIDER_REJECTED"),
    ],
)
def test_http_errors_map_to_named_errors_and_codes(status: int, body: str, name: str, code: str) -> None:
    error = classify_http_error(status, body)
    assert type(error).__name__ == name and ERROR_CODES[name] == code


def test_provider_message_keeps_the_providers_words_short() -> None:
    assert provider_message('{"code": 400, "reason": "BAD", "message": "duration invalid", "metadata": {"f": "d"}}') == (
        'duration invalid; BAD; 400; {"f": "d"}'
    )
    assert len(provider_message("x" * 5000)) <= 303


def test_retry_after_is_kept() -> None:
    assert classify_http_error(429, "{}", "7").retry_after == 7  # type: ignore[attr-defined]


def test_every_error_name_maps_to_a_documented_code() -> None:
    assert set(ERROR_CODES.values()) <= set(ALL_ERROR_CODES)
    assert error_code("States.Timeout") == "INTERNAL"


def test_task_result_parses_numbers_sent_as_strings() -> None:
    result = TaskResult.model_validate(
        {
            "task": {"task_id": "t", "status": "TASK_STATUS_PROCESSING", "eta": "12", "progress_percent": "40"},
            "videos": [{"video_url": "https://v", "video_url_ttl": "3600"}],
            "extra": {"seed": "1"},
        }
    )
    assert (result.task.eta, result.task.progress_percent, result.videos[0].video_url_ttl) == (12, 40, 3600)
    assert TaskResult.model_validate({"task": {"status": "TASK_STATUS_NEW_THING"}}).task.task_status is TaskStatus.UNKNOWN


def test_catch_error_with_lambda_cause_is_described() -> None:
    cause = json.dumps({"errorType": "ProviderFailed", "errorMessage": "Novita could not generate the video: nsfw"})
    failed = StepError.model_validate({"Error": "ProviderFailed", "Cause": cause})
    assert describe_error(failed) == ("PROVIDER_FAILED", "Novita could not generate the video: nsfw")
    timed_out = StepError.model_validate({"Error": "States.Timeout", "Cause": ""})
    assert describe_error(timed_out) == ("INTERNAL", "the step took longer than its time limit")
    assert describe_error(None) == ("INTERNAL", "the step failed")


# -- notices -----------------------------------------------------------------------------------------
def _success() -> Notice:
    return success_notice(
        job_id="été-1234567890",
        task_id="t1",
        source={"bucket": "in", "key": "incoming/a/été.jpg"},
        video=NoticeVideo(bucket="out", key="videos/a/été.mp4", size_bytes=1234, sha256="ab" * 32, url="https://signed"),
        request={"model": "vidu-q2-turbo-img2video", "prompt": "p", "resolution": "720p"},
        tags={"team": "x"},
        timings={},
    )


def test_success_notice_schema_and_attributes() -> None:
    notice = _success()
    args = sns_publish_arguments(notice, "arn:topic")
    message = json.loads(args["Message"])
    body = json.loads(message["default"])
    assert body["version"] == "1" and body["event"] == "video.succeeded" and body["notice_id"] == "été-1234567890:succeeded"
    assert body["error"] is None and body["video"]["size_bytes"] == 1234 and body["tags"] == {"team": "x"}
    assert args["MessageStructure"] == "json" and "Your video is ready." in message["email"]
    assert {k: v["StringValue"] for k, v in args["MessageAttributes"].items()} == {
        "event": "video.succeeded",
        "resolution": "720p",
        "model": "vidu-q2-turbo-img2video",
    }


def test_subject_is_ascii_and_readable() -> None:
    assert subject(_success()) == "Video ready: ete.mp4"
    failed = failure_notice(
        job_id="j",
        source={"bucket": "b", "key": "incoming/" + "猫" * 300 + ".jpg"},
        error=NoticeError(code="INVALID_SIDECAR", message="m", stage="submit"),
    )
    text = subject(failed)
    assert text.isascii() and len(text) < 100 and text.startswith("Video failed (INVALID_SIDECAR)")


def test_failure_email_says_why() -> None:
    failed = failure_notice(
        job_id="j",
        source={"bucket": "b", "key": "incoming/x.jpg"},
        error=NoticeError(code="MISSING_SIDECAR", message="upload x.json", stage="submit"),
    )
    assert failed.video is None and failed.notice_id == "j:failed"
    assert "MISSING_SIDECAR" in email_text(failed) and "upload x.json" in email_text(failed)
