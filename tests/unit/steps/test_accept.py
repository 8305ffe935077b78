"""Accept: an upload becomes one validated job and its execution, or one precise failure notice; nothing is paid."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from typing import Any
from unittest import mock

import pytest
import responses
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from img2video.aws import clients
from img2video.core.errors import DownloadInterrupted
from img2video.steps import accept as accept_module

from tests.conftest import ANY_CHAR, Aws, any_text, jpeg_bytes, png_bytes, s3_event, sqs_event
from tests.unit.steps.support import (
    accept,
    aws_error,
    context,
    execution_input,
    executions,
    failing,
    handler,
    invoke,
    novita_calls,
    now_iso,
    put,
    requeued,
    spy,
    tags,
)


def recheck(aws: Aws, key: str, first_seen: float, attempt: int = 0, reason: str = "await-sidecar", receive_count: int = 1) -> Any:
    """The Accept function's own delayed re-check of a key, as it put it on the UploadQueue."""
    body = {"img2video": {"bucket": aws.input_bucket, "key": key, "first_seen": first_seen, "attempt": attempt, "reason": reason}}
    return invoke(aws, "AcceptFunction", sqs_event(body, receive_count=receive_count))


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

    monkeypatch.setattr(accept_module, "accept_job", broken)  # the start of its execution
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
    monkeypatch.setattr(accept_module, "validated_image", mock.Mock(side_effect=DownloadInterrupted("the image read was cut short")))

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


def _object_created(bucket: str, key: str) -> dict[str, Any]:
    """EventBridge's "Object Created" for an upload, as S3 sends it (the key as stored, not URL-encoded)."""
    return {
        "version": "0",
        "id": f"ev-{key}",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": now_iso(),
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, "size": 1}, "reason": "PutObject"},
    }


def test_eventbridge_deliveries_duplicated_and_reordered_make_one_job(aws: Aws) -> None:
    """An existing bucket's uploads come through EventBridge, at least once and in no order: the image's event twice
    and before the sidecar's still make one job of the pair, with the key as stored (a plus is a plus)."""
    put(aws, "incoming/a/sea+sky.json", json.dumps({"prompt": "waves"}))
    put(aws, "incoming/a/sea+sky.jpg", jpeg_bytes())
    image, side = _object_created(aws.input_bucket, "incoming/a/sea+sky.jpg"), _object_created(aws.input_bucket, "incoming/a/sea+sky.json")
    invoke(aws, "AcceptFunction", sqs_event(image, image))
    invoke(aws, "AcceptFunction", sqs_event(side, image))
    runs = executions(aws)
    assert len(runs) == 1 and execution_input(aws, runs[0])["job"]["source"]["key"] == "incoming/a/sea+sky.jpg"
