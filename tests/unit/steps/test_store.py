"""Store: the finished video streamed to S3 with its manifest, resumed wherever an earlier try stopped."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import responses
from img2video.aws import jobs_table
from img2video.core.errors import DownloadFailed, DownloadInterrupted
from img2video.core.jobs import history_key

from tests.conftest import Aws
from tests.unit.steps.support import JOB_ID, RESULT_URL, VIDEO, VIDEO_URL, novita_calls, poll, result, store, store_state


def output_keys(aws: Aws) -> list[str]:
    return [item["Key"] for item in aws.s3.list_objects_v2(Bucket=aws.output_bucket).get("Contents", [])]


def manifest(aws: Aws) -> dict[str, Any]:
    return json.loads(aws.s3.get_object(Bucket=aws.output_bucket, Key="videos/cat.json")["Body"].read())  # type: ignore[no-any-return]


@responses.activate
def test_the_video_is_streamed_and_its_manifest_written_once(aws: Aws, public_dns: None) -> None:
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
def test_the_video_comes_from_the_url_the_poll_just_read_and_novitas_generation_time_is_kept(aws: Aws, public_dns: None) -> None:
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
