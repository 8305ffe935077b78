"""The job lifecycle a user lives with: a re-upload is a new attempt, the jobs table, cancel, the daily limit."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import boto3
import pytest
from img2video.aws.jobs_table import plain
from img2video_local.emulator import EmulatorConfig
from img2video_local.runtime import LocalPipeline
from img2video_local.template import REGION

from tests.conftest import API_KEY, jpeg_bytes
from tests.integration.test_pipeline import FAST, only, pipeline, run_jobs, sidecar, wait_until

pytestmark = pytest.mark.integration


def test_uploading_the_same_files_again_after_a_failure_is_a_new_attempt_with_its_own_notice() -> None:
    image, prompt = jpeg_bytes(), sidecar()
    with pipeline(balance=0) as local:
        first = only(run_jobs(local, [("incoming/r/cat.json", prompt), ("incoming/r/cat.jpg", image)], {"incoming/r/cat.jpg"}))
        assert first["event"] == "video.failed" and first["attempt"] == 1
        # the provider's own words reach the user (SendTaskFailure's cause, which local mode once dropped)
        assert first["error"]["code"] == "INSUFFICIENT_BALANCE" and "top up" in first["error"]["message"]
        local.emulator.config.balance = 5  # the user topped up
        local.upload("incoming/r/cat.jpg", image)  # the very same bytes: the same ETag
        time.sleep(1.5)  # long enough for Accept to see the image with its old sidecar first
        local.upload("incoming/r/cat.json", prompt)
        second = wait_until(lambda: [r.notice for r in local.notices if r.notice["event"] == "video.succeeded"], 60)
        assert len(second) == 1, "a re-upload after a failure was silently ignored"
        assert second[0]["job_id"] != first["job_id"] and second[0]["attempt"] == 2
        local.wait_for_notices({"never"}, 2)  # re-uploading both files is one new attempt, not one per file
        assert len(local.notices) == 2 and len(local.emulator.submissions) == 1
        manifest = local.s3.get_object(Bucket=local.output_bucket, Key="videos/r/cat.json")["Body"].read()
        assert b'"attempt": 2' in manifest


def _jobs(local: LocalPipeline) -> list[dict[str, Any]]:
    """Every job's item in the jobs table (a scan is fine in a test; the CLI queries its indexes)."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    items = dynamodb.scan(TableName=local.stack.id("JobsTable"), ConsistentRead=True)["Items"]
    return [plain(item) for item in items if not item["job_id"]["S"].startswith("#")]


def test_the_daily_limit_holds_jobs_until_a_window_has_room_and_never_goes_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "12")  # a "day" of 12 s, so windows open within the test
    images = {f"incoming/q/{index}.jpg" for index in range(6)}
    uploads = [(key.replace(".jpg", ".txt"), b"the tide comes in") for key in images] + [(key, jpeg_bytes()) for key in images]
    with pipeline(parameters={"MaxSubmissionsPerDay": "2", "SubmitConcurrency": "5"}) as local:
        received = run_jobs(local, uploads, images, timeout=300)
        assert [r.notice["event"] for r in received] == ["video.succeeded"] * 6
        jobs = _jobs(local)
        per_window = Counter(job["quota_window"] for job in jobs)
        assert max(per_window.values()) == 2 and len(per_window) >= 3, per_window  # never more than the limit in a window
        assert len(local.emulator.submissions) == 6  # each held job was paid once, when its window came
        # how many wait depends on how fast this machine accepts six uploads: some do unless that takes two windows
        held = [job for job in jobs if "held_until" in job]
        assert held and all(job["state"] == "succeeded" for job in jobs)


def test_a_job_the_daily_limit_would_hold_past_its_submit_window_fails_clearly_and_unpaid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "100000")  # the next window opens long after the job's 60 s
    with pipeline(parameters={"MaxSubmissionsPerDay": "1", "SubmitWindowSeconds": "60"}) as local:
        uploads = [
            ("incoming/l/a.txt", b"p"),
            ("incoming/l/a.jpg", jpeg_bytes()),
            ("incoming/l/b.txt", b"p"),
            ("incoming/l/b.jpg", jpeg_bytes()),
        ]
        received = run_jobs(local, uploads, {"incoming/l/a.jpg", "incoming/l/b.jpg"})
        [failed] = [r.notice for r in received if r.notice["event"] == "video.failed"]
        assert failed["error"]["code"] == "DAILY_LIMIT" and failed["error"]["stage"] == "submit"
        assert "daily limit of 1 Novita submissions (MaxSubmissionsPerDay)" in failed["error"]["message"]
        assert "nothing was paid" in failed["error"]["message"]
        assert len(local.emulator.submissions) == 1
        assert {job["job_id"]: job["state"] for job in _jobs(local)}[failed["job_id"]] == "failed"


def test_a_claim_dynamodb_cancels_for_a_conflict_is_tried_again_never_read_as_the_daily_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a daily limit with room, and DynamoDB cancelling claims for a conflicting transaction or throttling, as it
    # does when five Submits meet on one window's item (moto never does; the fault injector does)
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "100000")  # a hold would last past the test: the next window is far
    images = {f"incoming/c/{index}.jpg" for index in range(3)}
    uploads = [(key.replace(".jpg", ".txt"), b"the tide comes in") for key in images] + [(key, jpeg_bytes()) for key in images]
    config = EmulatorConfig(api_key=API_KEY, **FAST)
    faults = "SubmitFunction:dynamodb.TransactWriteItems:times=4"
    with LocalPipeline(parameters={"MaxSubmissionsPerDay": "10"}, emulator_config=config, aws_faults=faults, aws_faults_seed=3) as local:
        # When the jobs run, Then each is submitted once and succeeds, none held for a window that had room
        received = run_jobs(local, uploads, images, timeout=180)
        assert sorted(r.notice["event"] for r in received) == ["video.succeeded"] * 3
        assert len(local.emulator.submissions) == 3
        assert not [job for job in _jobs(local) if "held_until" in job]
        assert sum(n for (_, call, _), n in local.faults.fired.items() if call == "dynamodb.TransactWriteItems") >= 1
