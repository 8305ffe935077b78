"""The webhook fast path end to end: the emulator POSTs ASYNC_TASK_RESULT to the local Function URL, with faults."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import boto3
import pytest
from img2video.aws.jobs_table import _slot
from img2video.core.jobs import history_key
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION

from tests.conftest import jpeg_bytes
from tests.integration.test_pipeline import pipeline, sidecar, wait_until

pytestmark = pytest.mark.integration

# Polls alone would first look after 30 s: a job told sooner was told by its webhook.
SLOW_POLLS = {"PollMinSeconds": "30", "PollMaxSeconds": "60"}


def drop(local: LocalPipeline, count: int, prefix: str = "w") -> set[str]:
    images = set()
    for index in range(count):
        local.upload(f"incoming/{prefix}{index}.json", sidecar())
        local.upload(f"incoming/{prefix}{index}.jpg", jpeg_bytes())
        images.add(f"incoming/{prefix}{index}.jpg")
    return images


def one_notice_each(local: LocalPipeline, images: set[str], timeout: float) -> list[dict[str, Any]]:
    received = local.wait_for_notices(images, timeout)
    time.sleep(0.5)  # a second notice would come now
    notices = [r.notice for r in local.notices]
    assert sorted(n["source"]["key"] for n in notices) == sorted(images), notices
    paid = [s["image"] for s in local.emulator.submissions]
    assert len(paid) == len(images) == len(set(paid)), "a job was paid for twice"
    return [r.notice for r in received]


def left_its_wait(local: LocalPipeline, notice: dict[str, Any]) -> list[str]:
    """How each of the job's waits ended, in order: "webhook", "timeout" (the poll's turn) or "refused"."""
    arn = f"{local.stack.id('VideoJobStateMachine').replace(':stateMachine:', ':execution:')}:{notice['job_id']}"
    events = local.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    kinds = {"TaskSucceeded": "webhook", "TaskTimedOut": "timeout", "TaskFailed": "refused"}
    return [kinds[e["type"]] for e in events if e["type"] in kinds and "dynamodb" in json.dumps(e, default=str)]


def test_the_webhook_tells_the_job_within_seconds_where_polls_would_take_30() -> None:
    # tasks of 8 s, so each job waits before its webhook comes however loaded the machine (with 1.5 s tasks a loaded
    # machine delivered one before the job waited: that path is the next test's)
    with pipeline(parameters=SLOW_POLLS, generation_seconds=8) as local:
        images = drop(local, 3)
        notices = one_notice_each(local, images, timeout=120)
        for notice in notices:
            assert notice["event"] == "video.succeeded" and notice["timings"]["polls"] == 0
            assert left_its_wait(local, notice) == ["webhook"]
        assert local.functions.invocations["PollFunction"] == 0
        # one Task Result call per job, the webhook's confirmation: Store downloads from the URL it read
        assert local.emulator.requests_seen["result"] == 3
        # the path secret went to Novita in extra.webhook.url, and nowhere users see
        url = local.emulator.tasks[notices[0]["task_id"]].body["extra"]["webhook"]["url"]
        secret = url.rstrip("/").rsplit("/", 1)[-1]
        assert len(secret) == 64 and url.startswith(local.stack.environment["WEBHOOK_URL"])
        assert secret not in json.dumps(notices) + json.dumps(local.stack.environment)


def test_a_webhook_that_comes_before_the_job_waits_is_not_lost() -> None:
    """webhook_early: the task finishes at once and its webhook is delivered before the submit is even answered."""
    with pipeline("webhook_early=1", parameters=SLOW_POLLS) as local:
        images = drop(local, 2, "early")
        notices = one_notice_each(local, images, timeout=120)
        for notice in notices:
            # the outcome waited on the task's item: the first wait was refused and the one poll saw the video
            assert notice["event"] == "video.succeeded" and notice["timings"]["polls"] == 1
            assert left_its_wait(local, notice) == ["refused"]
        assert local.emulator.webhooks.get("early") == 2


def test_lost_webhooks_are_caught_by_the_polls() -> None:
    with pipeline("webhook_lost=1") as local:
        images = drop(local, 3, "lost")
        notices = one_notice_each(local, images, timeout=180)
        assert all(n["event"] == "video.succeeded" and n["timings"]["polls"] >= 1 for n in notices)
        assert all(set(left_its_wait(local, n)) == {"timeout"} for n in notices)
        assert local.emulator.webhooks == {"lost": 3} and local.functions.invocations["WebhookFunction"] == 0
        # Store downloads from the URL the poll that saw the task done read: no Task Result call beyond the polls
        assert local.emulator.requests_seen["result"] == sum(n["timings"]["polls"] for n in notices)


def test_webhooks_that_come_after_a_poll_saw_the_task_done_still_count_for_the_kind() -> None:
    """webhook_late: each webhook comes 3 s after the task ended, when a 1 s poll has seen it done and Store has run.
    The kind's history must count each of them as arrived: a kind whose webhooks all come, a moment after its polls,
    would otherwise never be trusted, and its jobs would poll on as if it had none (issue 10: 2.4 status calls a job)."""
    with pipeline("webhook_late=1,webhook_late_seconds=3") as local:
        images = drop(local, 4, "late")
        notices = one_notice_each(local, images, timeout=180)
        assert all(n["timings"]["polls"] >= 1 for n in notices)  # seen done by their polls, before the webhooks came
        delivered = wait_until(lambda: [e for e in local.emulator.webhook_log if e["kind"] == "delivered"][3:], timeout=120)
        assert delivered and all(e["status"] == 200 for e in local.emulator.webhook_log if e["kind"] == "delivered")
        key = history_key("vidu-q2-turbo-img2video", "540p", 2, False)
        table = local.stack.id("JobsTable")
        history = boto3.client("dynamodb", region_name=REGION).get_item(TableName=table, Key={"job_id": {"S": key}})["Item"]
        asked, arrivals = history["asked"]["M"], history.get("arrivals", {}).get("M", {})
        # one ring slot per job (two jobs whose ids hash to the same slot share it: the later one holds it)
        jobs = {n["job_id"] for n in notices}
        assert {job["S"] for job in asked.values()} <= jobs and len(asked) == len({_slot(job) for job in jobs})
        assert all(arrivals.get(slot) == job for slot, job in asked.items()), (asked, arrivals)


def test_forged_duplicated_and_late_webhooks_change_nothing() -> None:
    faults = "webhook_forged=1,webhook_dup=1,webhook_late=1,webhook_late_seconds=4"
    with pipeline(faults) as local:
        images = drop(local, 3, "forged")
        notices = one_notice_each(local, images, timeout=180)
        assert all(n["event"] == "video.succeeded" for n in notices)
        log = local.emulator.webhook_log
        # a forged success while the task ran was answered 200 and ignored; without the URL's secret, 404
        assert {e["status"] for e in log if e["kind"] == "forged"} == {200}
        assert {e["status"] for e in log if e["kind"] == "forged_without_secret"} == {404}
        assert all(e["status"] == 200 for e in log if e["kind"] == "delivered")
        for notice in notices:  # the video stored is the task's own, never the forged URL's
            stored = local.s3.get_object(Bucket=local.output_bucket, Key=notice["video"]["key"])["Body"].read()
            assert stored == local.emulator.served_videos[notice["task_id"]]
            assert hashlib.sha256(stored).hexdigest() == notice["video"]["sha256"]


def test_with_webhook_off_no_url_exists_and_polls_do_the_work() -> None:
    with pipeline(parameters={"Webhook": "off"}) as local:
        assert "WebhookFunction" not in local.stack.functions and not local.stack.environment.get("WEBHOOK_URL")
        images = drop(local, 2, "off")
        notices = one_notice_each(local, images, timeout=180)
        assert all(n["event"] == "video.succeeded" for n in notices)
        assert all("extra" not in task.body for task in local.emulator.tasks.values())
        assert all(left_its_wait(local, n) == [] for n in notices)
