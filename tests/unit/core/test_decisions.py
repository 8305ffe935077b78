"""Pure decisions: job identity, wait policy, image checks, error mapping, notices."""

from __future__ import annotations

import io
import json
import math
import random
import statistics
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from img2video.core.errors import ALL_ERROR_CODES, ERROR_CODES, ImageTooLarge, UnsupportedImage, error_code
from img2video.core.failure import describe_error
from img2video.core.images import MAX_IMAGE_BYTES, ImageHeader, check_image
from img2video.core.jobs import StepError, job_id
from img2video.core.notices import (
    Notice,
    NoticeError,
    NoticeVideo,
    email_text,
    failure_notice,
    sns_publish_arguments,
    subject,
    success_notice,
)
from img2video.core.wait_policy import Plan, WaitPolicy
from img2video.novita.errors import classify_http_error, provider_message
from img2video.novita.models import TaskResult, TaskStatus
from PIL import Image, PngImagePlugin

from tests.conftest import bomb_png, jpeg_bytes, png_bytes


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


def test_an_estimate_skips_the_polls_that_cannot_see_the_task_done_and_ends_sooner_than_the_interval() -> None:
    # the time left is taken to lie within [estimate / 1.5, estimate / 0.5]
    assert POLICY.next_wait(previous_wait=5, eta=25) == 17  # cannot be done within 16.7 s: no poll before
    assert POLICY.next_wait(previous_wait=5, eta=2) == 4  # done within 4 s for sure: sooner than the 5 s interval
    assert POLICY.next_wait(previous_wait=5, eta=6) == 5  # could be done within 5 s or not: the interval
    assert POLICY.next_wait(previous_wait=5, eta=600) == 60  # never longer than PollMaxSeconds


def test_progress_extrapolates_remaining_time() -> None:
    # 25 % done after 20 s: about 60 s left, at least 40 s
    assert POLICY.next_wait(previous_wait=5, progress_percent=25, elapsed_seconds=20) == 40
    assert POLICY.next_wait(previous_wait=5, progress_percent=80, elapsed_seconds=40) == 7


def test_without_hints_or_history_the_wait_grows_geometrically_to_the_cap() -> None:
    waits, previous = [], None
    for _ in range(8):
        previous = POLICY.next_wait(previous_wait=previous)
        waits.append(previous)
    assert waits[0] == 5 and waits == sorted(waits) and waits[-1] == 60


def test_history_of_alike_jobs_plans_fewer_polls_than_the_interval_and_no_more_delay() -> None:
    rng = random.Random(3)
    history = [90 * math.exp(rng.gauss(0, 0.2)) for _ in range(128)]
    plan = POLICY.plan(history)
    assert plan is not None and plan.first > 30  # no job of this kind was ever done that soon: no poll before
    assert POLICY.plan(history[:19]) is None  # too few to say
    jobs = [90 * math.exp(rng.gauss(0, 0.2)) for _ in range(2000)]

    def run(first: int, wait: Callable[[int], int]) -> tuple[float, float]:
        results = []
        for seconds in jobs:
            t, polls = float(first), 1
            while t < seconds:
                t, polls = t + wait(polls), polls + 1
            results.append((polls, t - seconds))
        return statistics.mean(p for p, _ in results), statistics.mean(d for _, d in results)

    fixed_polls, fixed_delay = run(5, lambda polls: 5)
    polls, delay = run(POLICY.first_wait(plan), lambda polls: POLICY.next_wait(None, plan=plan, polls=polls))
    assert polls < fixed_polls * 0.8 and delay <= fixed_delay


def test_a_plan_keeps_its_average_spacing_in_whole_seconds() -> None:
    plan = Plan(first=60, spacing=4.5)
    waits = [plan.wait_after(n) for n in range(1, 11)]
    assert set(waits) == {4, 5} and sum(waits) == 45


@given(st.none() | st.integers(0, 10_000), st.none() | st.floats(-5, 1e6), st.none() | st.floats(-5, 200), st.none() | st.floats(0, 1e6))
def test_wait_is_always_bounded(previous: int | None, eta: float | None, progress: float | None, elapsed: float | None) -> None:
    # shorter than PollMinSeconds only to see a task that is done by then for sure
    assert 1 <= POLICY.next_wait(previous, eta, progress, elapsed) <= 60


# -- images ---------------------------------------------------------------------------------------
class Reads:
    """The object's bytes behind check_image's reader, counting the ranged reads it makes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls += 1
        return self.data[offset : offset + length]


def check(data: bytes, size: int | None = None, key: str = "incoming/x.jpg") -> ImageHeader:
    reads = Reads(data)
    header = check_image(key, len(data) if size is None else size, reads)
    assert reads.calls <= 3
    return header


def refusal(data: bytes) -> str:
    with pytest.raises(UnsupportedImage) as caught:
        check(data)
    return caught.value.message


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_real_images_pass_with_their_dimensions() -> None:
    assert check(jpeg_bytes(640, 400)) == ImageHeader("jpeg", 640, 400)
    assert check(png_bytes(200, 300)) == ImageHeader("png", 200, 300)


PICTURE = Image.linear_gradient("L").convert("RGB").resize((300, 200))
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "jpeg-baseline": ("JPEG", {}),
    "jpeg-progressive": ("JPEG", {"progressive": True}),
    "jpeg-with-exif-and-a-big-icc-profile": ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 60000, "icc_profile": b"\x00" * 400_000}),
    "png": ("PNG", {}),
    "png-with-big-text-before-the-data": ("PNG", {"pnginfo": None}),
    "webp-lossy": ("WEBP", {"quality": 50}),
    "webp-lossless": ("WEBP", {"lossless": True}),
    "webp-extended": ("WEBP", {"icc_profile": b"\x00" * 600}),
}


@pytest.mark.parametrize("name", FORMATS)
def test_the_header_gives_the_same_dimensions_as_pillow(name: str) -> None:
    fmt, options = FORMATS[name]
    if name == "png-with-big-text-before-the-data":
        info = PngImagePlugin.PngInfo()
        info.add_text("comment", "x" * 500_000)  # pushes the image data past the first read
        options = {"pnginfo": info}
    data = encoded(PICTURE, fmt, **options)
    header = check(data)
    assert (header.kind, header.width, header.height) == (fmt.lower(), *Image.open(io.BytesIO(data)).size)


@given(st.integers(128, 1200), st.integers(128, 1200), st.sampled_from(["JPEG", "PNG", "WEBP"]), st.booleans())
@settings(max_examples=40, deadline=None)
def test_any_size_and_format_is_read_as_pillow_reads_it_and_judged_by_the_rules(width: int, height: int, fmt: str, lossless: bool) -> None:
    data = encoded(Image.new("RGB", (width, height), (9, 99, 199)), fmt, **({"lossless": lossless} if fmt == "WEBP" else {}))
    within = max(width, height) <= 4 * min(width, height)
    try:
        header = check(data)
    except UnsupportedImage as exc:
        assert not within and "aspect ratio" in exc.message
    else:
        assert within and (header.width, header.height) == (width, height)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"hello, I am text pretending to be a jpeg", "is not a JPEG, PNG or WebP image"),
        (jpeg_bytes()[:200], "looks truncated"),
        (png_bytes()[:-20], "looks truncated"),
        (jpeg_bytes()[:3] + b"\x00" * 500, "is not a readable JPEG image"),
        (encoded(Image.new("RGB", (1, 1)), "PNG"), "is 1×1 pixels, smaller than 128 pixels on a side; images must be 128 to 16384"),
        (encoded(Image.new("RGB", (4000, 20)), "JPEG"), "is 4000×20 pixels, smaller than 128"),
        (encoded(Image.new("RGB", (2000, 10)).resize((2000, 10)), "PNG"), "is 2000×10 pixels"),
        (encoded(Image.new("RGB", (1000, 200)), "WEBP"), "is 1000×200 pixels, an aspect ratio of 5:1; images must be"),
        (encoded(Image.new("RGB", (200, 801)), "JPEG"), "an aspect ratio of 1:4.01"),
        (encoded(Image.new("RGB", (16385, 128)), "PNG"), "is 16385×128 pixels (2.1 megapixels)"),
    ],
)
def test_bad_images_are_named(data: bytes, expected: str) -> None:
    assert expected in refusal(data)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = bomb_png(30000, 30000)
    assert len(bomb) < 200_000
    message = refusal(bomb)
    assert "is 30000×30000 pixels (900.0 megapixels)" in message and "at most 120 megapixels" in message


def test_the_extremes_the_rules_allow_pass() -> None:
    assert check(encoded(Image.new("L", (128, 512)), "PNG")) == ImageHeader("png", 128, 512)
    assert check(bomb_png(16384, 4096)).width == 16384
    assert check(bomb_png(10954, 10954)).height == 10954  # 119.99 megapixels


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_are_refused(fmt: str) -> None:
    frames = [Image.new("RGB", (200, 200), color) for color in ("red", "green", "blue")]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert f"is an animated {fmt}; upload a still image" in refusal(data)


def test_oversized_image() -> None:
    with pytest.raises(ImageTooLarge, match="up to 52428800 bytes"):
        check(jpeg_bytes(), size=MAX_IMAGE_BYTES + 1)


def test_empty_image() -> None:
    assert "is empty (0 bytes)" in refusal(b"")


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
        attempt=1,
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
        attempt=1,
        source={"bucket": "b", "key": "incoming/" + "猫" * 300 + ".jpg"},
        error=NoticeError(code="INVALID_SIDECAR", message="m", stage="submit"),
    )
    text = subject(failed)
    assert text.isascii() and len(text) < 100 and text.startswith("Video failed (INVALID_SIDECAR)")


def test_failure_email_says_why() -> None:
    failed = failure_notice(
        job_id="j",
        attempt=1,
        source={"bucket": "b", "key": "incoming/x.jpg"},
        error=NoticeError(code="MISSING_SIDECAR", message="upload x.json", stage="submit"),
    )
    assert failed.video is None and failed.notice_id == "j:failed"
    assert "MISSING_SIDECAR" in email_text(failed) and "upload x.json" in email_text(failed)


def test_the_largest_notice_a_user_can_cause_fits_in_one_sns_message() -> None:
    """Every field at its limit, in 4-byte characters: the message stays under SNS's 256 KiB."""
    emoji = "\U0001f408"
    request = {
        "model": "vidu-q2-turbo-img2video",
        "prompt": emoji * 2000,
        "extra_images": [emoji * 256] * 10,  # 1024 bytes each
        "output_name": emoji * 120,
        "voice_id": emoji * 200,
    }
    notice = failure_notice(
        job_id="x" * 80,
        attempt=10**9,
        source={"bucket": "b" * 63, "key": emoji * 256},
        error=NoticeError(code="INVALID_SIDECAR", message=emoji * 100_000, stage="submit"),
        request=request,
        tags={emoji * 127 + str(i): emoji * 256 for i in range(20)},
    )
    arguments = sns_publish_arguments(notice, "arn:aws:sns:us-east-1:123456789012:t")
    assert len(arguments["Message"].encode()) < 256 * 1024 - 4096  # room for the attributes and subject


# -- images, found by attacking the change ------------------------------------------------------------------------
PHOTO = encoded(Image.new("RGB", (400, 300), "teal"), "JPEG")


@pytest.mark.parametrize(
    "trailer",
    [
        b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 3000 + b"moov-data-of-a-motion-photo",  # Pixel / Samsung motion photo
        b"SEFH" + b"\x01" * 200 + b"SEFT",  # Samsung's trailer
        b"\x00" * 500,  # zero padding
        b"\n",
    ],
)
def test_photos_with_data_after_the_end_marker_are_complete(trailer: bytes) -> None:
    motion_xmp = b"http://ns.google.com/photos/1.0/camera/ MotionPhoto" if b"ftyp" in trailer else b""
    data = PHOTO[:2] + (b"\xff\xe1" + (len(motion_xmp) + 2).to_bytes(2, "big") + motion_xmp if motion_xmp else b"") + PHOTO[2:]
    assert check(data + trailer) == ImageHeader("jpeg", 400, 300)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_with_data_after_their_end_are_complete(fmt: str) -> None:
    assert check(encoded(Image.new("RGB", (300, 200)), fmt) + b"trailing bytes").width == 300


def test_a_file_shorter_than_listed_is_refused_not_a_crash() -> None:
    """The object changed between the listing and the reads (it was overwritten): refused with a clear message."""
    reads = Reads(b"\xff\xd8\xff")
    with pytest.raises(UnsupportedImage, match=r"changed while it was read|ends inside its header"):
        check_image("incoming/x.jpg", 5428, reads)


@pytest.mark.parametrize(
    ("marker", "expected"),
    [(0xC3, "lossless JPEG"), (0xC9, "arithmetic-coded JPEG"), (0xCB, "arithmetic-coded JPEG"), (0xC5, "hierarchical JPEG")],
)
def test_jpeg_variants_few_decoders_read_are_refused_by_name(marker: int, expected: str) -> None:
    sof = PHOTO.index(b"\xff\xc0")
    data = PHOTO[: sof + 1] + bytes([marker]) + PHOTO[sof + 2 :]
    assert expected in refusal(data)


def test_a_12_bit_jpeg_is_refused() -> None:
    sof = PHOTO.index(b"\xff\xc0")
    data = PHOTO[: sof + 4] + b"\x0c" + PHOTO[sof + 5 :]
    assert "12-bit" in refusal(data)


def test_a_jpeg_that_declares_its_height_later_is_refused_by_name() -> None:
    sof = PHOTO.index(b"\xff\xc0")
    data = PHOTO[: sof + 5] + b"\x00\x00" + PHOTO[sof + 7 :]
    assert "declares its height after the image data" in refusal(data)


def test_a_motion_photo_whose_header_needs_a_second_read_is_still_complete() -> None:
    """The first read's bytes (where the motion-photo XMP is) are kept after the header needed a second read."""
    xmp = b"http://ns.google.com/photos/1.0/camera/ MotionPhoto"
    photo = encoded(Image.new("RGB", (400, 300), "teal"), "JPEG", icc_profile=b"\x00" * 400_000)  # SOF past 256 KiB
    data = photo[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + photo[2:] + b"\x00\x00\x00\x18ftypmp42" + b"m" * 5000
    reads = Reads(data)
    assert check_image("incoming/x.jpg", len(data), reads) == ImageHeader("jpeg", 400, 300) and reads.calls == 3


def test_a_kinds_webhooks_are_waited_for_only_while_they_arrive_and_past_the_slowest_job() -> None:
    from img2video.core.wait_policy import WEBHOOK_DELIVERY_SECONDS, webhook_first_wait

    samples = [60.0 + index % 10 for index in range(40)]  # 60 … 69 s by Novita's clock
    assert webhook_first_wait(samples, [True] * 4) is None  # too few jobs to say
    assert webhook_first_wait(samples, [True] * 7 + [False] * 3) is None  # 70 % came: keep polling as without webhooks
    wait = webhook_first_wait(samples, [True] * 9 + [False])
    # past the 95th percentile with its margin, and Novita's 5 s to deliver: the webhook comes first, the poll is the net
    assert wait is not None and wait >= 69 * 1.25 + WEBHOOK_DELIVERY_SECONDS
    assert WaitPolicy(5, 60).first_wait(None, wait) == wait
