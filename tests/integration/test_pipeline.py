"""The whole pipeline in local mode: the real ASL in moto, the real handlers, the Novita emulator rendering MP4s."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import av
import pytest
from img2video.core.notices import Notice
from img2video_local.doorbell import IDLE_LOOK_SECONDS
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline, Received

from tests.conftest import API_KEY, jpeg_bytes

pytestmark = pytest.mark.integration

FAST = {"generation_seconds": 1.5, "queue_seconds": 0.3, "fps": 8}


@contextmanager
def pipeline(
    faults: str = "", parameters: dict[str, str] | None = None, environment: dict[str, str] | None = None, **emulator: Any
) -> Iterator[LocalPipeline]:
    config = EmulatorConfig(api_key=API_KEY, **{**FAST, **emulator}, faults=Faults.parse(faults))
    with LocalPipeline(parameters=parameters or {}, environment=environment or {}, emulator_config=config) as local:
        yield local


def sidecar(**fields: Any) -> bytes:
    return json.dumps({"prompt": "waves roll in", "duration": 2, "resolution": "540p", **fields}).encode()


def run_jobs(local: LocalPipeline, uploads: list[tuple[str, bytes]], images: set[str], timeout: float = 60) -> list[Received]:
    for key, data in uploads:
        local.upload(key, data)
    received = local.wait_for_notices(images, timeout)
    assert {r.notice["source"]["key"] for r in received} == images, "a job ended without its notice"
    return received


def wait_until(found: Callable[[], list[Any]], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while not (result := found()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def only(received: list[Received]) -> dict[str, Any]:
    assert len(received) == 1, [r.notice for r in received]
    return received[0].notice


def decode(data: bytes) -> tuple[float, int, int, str]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        duration = frames / float(stream.average_rate)
        return duration, stream.width, stream.height, stream.codec_context.name


def test_a_dropped_image_becomes_a_playable_video_with_manifest_and_notice() -> None:
    with pipeline() as local:
        received = run_jobs(
            local,
            [("incoming/beach/sea.jpg", jpeg_bytes(640, 400)), ("incoming/beach/sea.json", sidecar(tags={"t": "1"}))],
            {"incoming/beach/sea.jpg"},
        )
        [r] = received
        notice = Notice.model_validate(r.notice)  # the published JSON matches the schema exactly
        assert notice.event == "video.succeeded" and notice.error is None and notice.video is not None
        assert r.attributes == {"event": "video.succeeded", "resolution": "540p", "model": "vidu-q2-turbo-img2video"}
        assert r.subject == "Video ready: sea.mp4"
        video = local.s3.get_object(Bucket=local.output_bucket, Key="videos/beach/sea.mp4")
        data = video["Body"].read()
        assert video["ContentType"] == "video/mp4" and video["Metadata"]["job-id"] == notice.job_id
        duration, width, height, codec = decode(data)
        assert codec == "h264" and abs(duration - 2) <= 0.5
        assert (width, height) == (864, 540)  # short side 540, the image's 16:10 aspect, even sides
        manifest = json.loads(local.s3.get_object(Bucket=local.output_bucket, Key="videos/beach/sea.json")["Body"].read())
        assert manifest["video"]["sha256"] == notice.video.sha256 == hashlib.sha256(data).hexdigest()
        assert manifest["task_id"] == notice.task_id and manifest["request"]["prompt"] == "waves roll in"
        assert manifest["timings"]["polls"] >= 1 and notice.tags == {"t": "1"}
        assert local.emulator.served_videos[notice.task_id or ""] == data
        assert len(local.emulator.submissions) == 1


@pytest.mark.parametrize("order", ["image-first", "sidecar-first"])
def test_either_upload_order_makes_one_job(order: str) -> None:
    uploads = [("incoming/o.jpg", jpeg_bytes()), ("incoming/o.txt", b"a leaf falls")]
    if order == "sidecar-first":
        uploads.reverse()
    with pipeline() as local:
        notice = only(run_jobs(local, uploads, {"incoming/o.jpg"}))
        assert notice["event"] == "video.succeeded" and notice["request"]["prompt"] == "a leaf falls"
        assert len(local.emulator.submissions) == 1


def test_keys_with_spaces_plus_percent_and_unicode() -> None:
    key = "incoming/Été 2026/my cat + dog 100%.JPG"
    with pipeline() as local:
        notice = only(run_jobs(local, [(key, jpeg_bytes()), ("incoming/Été 2026/my cat + dog 100%.json", sidecar())], {key}))
        assert notice["event"] == "video.succeeded"
        assert notice["video"]["key"] == "videos/Été 2026/my cat + dog 100%.mp4"
        local.s3.head_object(Bucket=local.output_bucket, Key=notice["video"]["key"])


def test_provider_failure_reaches_the_subscriber_with_the_reason() -> None:
    with pipeline(faults="fail=1") as local:
        notice = only(run_jobs(local, [("incoming/f.txt", b"p"), ("incoming/f.jpg", jpeg_bytes())], {"incoming/f.jpg"}))
        assert notice["event"] == "video.failed" and notice["video"] is None
        assert notice["error"]["code"] == "PROVIDER_FAILED" and notice["error"]["stage"] == "poll"
        assert "content moderation" in notice["error"]["message"]


def test_a_task_that_never_finishes_times_out() -> None:
    with pipeline(faults="hang=1", environment={"MAX_WAIT_MINUTES": "0.1"}) as local:
        notice = only(run_jobs(local, [("incoming/h.txt", b"p"), ("incoming/h.jpg", jpeg_bytes())], {"incoming/h.jpg"}, timeout=120))
        assert notice["error"]["code"] == "PROVIDER_TIMEOUT"
        assert "not finished after 0.1 minutes" in notice["error"]["message"]


def test_a_429_storm_still_succeeds_with_one_submission() -> None:
    with pipeline(faults="429=0.6,seed=3") as local:
        notice = only(run_jobs(local, [("incoming/s.txt", b"p"), ("incoming/s.jpg", jpeg_bytes())], {"incoming/s.jpg"}, timeout=180))
        assert notice["event"] == "video.succeeded"
        assert len(local.emulator.submissions) == 1 and local.emulator.requests_seen["throttled"] > 0


def test_duplicated_s3_events_make_one_job_and_one_notice() -> None:
    with pipeline(faults="dup=1") as local:
        run_jobs(local, [("incoming/d.txt", b"p"), ("incoming/d.jpg", jpeg_bytes())], {"incoming/d.jpg"})
        local.wait_for_notices({"never"}, 3)  # give a duplicate notice time to show up, if there were one
        assert len([r for r in local.notices if r.notice["source"]["key"] == "incoming/d.jpg"]) == 1
        assert len(local.emulator.submissions) == 1
        assert local.event_keys.count((local.input_bucket, "incoming/d.jpg")) >= 2


def test_expired_and_truncated_video_urls_are_fetched_again() -> None:
    with pipeline(faults="expire=1,truncate=1") as local:
        notice = only(run_jobs(local, [("incoming/e.txt", b"p"), ("incoming/e.jpg", jpeg_bytes())], {"incoming/e.jpg"}, timeout=180))
        assert notice["event"] == "video.succeeded"
        data = local.s3.get_object(Bucket=local.output_bucket, Key=notice["video"]["key"])["Body"].read()
        assert (
            hashlib.sha256(data).hexdigest()
            == notice["video"]["sha256"]
            == hashlib.sha256(local.emulator.served_videos[notice["task_id"]]).hexdigest()
        )


def test_stored_videos_never_retrigger_the_pipeline() -> None:
    with pipeline() as local:
        run_jobs(local, [("incoming/r.txt", b"p"), ("incoming/r.jpg", jpeg_bytes())], {"incoming/r.jpg"})
        local.wait_for_notices({"never"}, 2)
        assert local.event_keys and all(bucket == local.input_bucket for bucket, _ in local.event_keys)
        assert not [key for _, key in local.event_keys if key.endswith((".mp4", ".json")) and "r." not in key]
        assert local.functions.invocations["SubmitFunction"] >= 1 and len(local.emulator.submissions) == 1


def test_missing_sidecar_fails_after_the_grace_period() -> None:
    with pipeline(parameters={"SidecarGraceSeconds": "2"}) as local:
        notice = only(run_jobs(local, [("incoming/alone.png", jpeg_bytes())], {"incoming/alone.png"}, timeout=120))
        assert notice["error"]["code"] == "MISSING_SIDECAR" and notice["error"]["stage"] == "submit"
        assert local.emulator.submissions == []
        # as the notice says: uploading the sidecar now starts the job, as a new job with its own notice
        local.upload("incoming/alone.txt", b"late but here")
        late = wait_until(lambda: [r.notice for r in local.notices if r.notice["event"] == "video.succeeded"], 120)
        assert len(late) == 1 and late[0]["job_id"] != notice["job_id"] and late[0]["request"]["prompt"] == "late but here"


def test_bad_sidecar_fails_with_a_precise_message_and_inputs_survive() -> None:
    with pipeline() as local:
        bad = b'{"prompt": "p", "resolution": "4k", "watermark": "yes"}'
        notice = only(run_jobs(local, [("incoming/b.json", bad), ("incoming/b.jpg", jpeg_bytes())], {"incoming/b.jpg"}))
        assert notice["error"]["code"] == "INVALID_SIDECAR"
        assert '"resolution" must be one of "540p", "720p", "1080p"; got "4k"' in notice["error"]["message"]
        assert '"watermark" must be a JSON boolean' in notice["error"]["message"]
        assert local.s3.get_object(Bucket=local.input_bucket, Key="incoming/b.json")["Body"].read() == bad
        assert local.emulator.submissions == []


def test_an_idle_pipeline_waits_for_news_instead_of_asking_aws_ten_times_a_second() -> None:
    """An idle `local up` burned a third of a core: each queue's poller and the notice collector asked SQS every 0.1 s,
    the backstop listed executions every 0.25 s. They now wait for moto's doorbell (a message sent or made visible,
    an execution ended), looking now and then as a safety net; a job still goes through at once."""
    with pipeline() as local:
        asked: list[str] = []
        for client in (local.sqs, local.sfn):
            client.meta.events.register("before-call.*.*", lambda model, **kwargs: asked.append(model.name))
        idle = time.monotonic()
        time.sleep(6)  # a window to count in, not a wait for something: a slower machine only asks less
        seconds = time.monotonic() - idle
        receives, listings = asked.count("ReceiveMessage"), asked.count("ListExecutions")
        pollers = len(local._sqs_sources()) + 1  # the functions' queues and the notice collector
        # at most one safety look per poller every IDLE_LOOK_SECONDS (and one in flight): it was ten a second each
        assert receives <= pollers * (seconds / IDLE_LOOK_SECONDS + 1), (receives, pollers)
        assert listings <= 3 * (seconds / (3 * IDLE_LOOK_SECONDS) + 1), listings
        notice = only(run_jobs(local, [("incoming/i.txt", b"p"), ("incoming/i.jpg", jpeg_bytes())], {"incoming/i.jpg"}, timeout=120))
        assert notice["event"] == "video.succeeded"
