"""The jobs table: attempts numbered once per upload, states that never go back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from img2video.aws import jobs_table
from img2video.core.errors import AwsTransient
from img2video.core.jobs import history_key
from img2video_local.moto_patches import serialize_dynamodb_requests
from img2video_local.template import REGION

from tests.conftest import Aws


def _open(job: str, key: str = "incoming/a/cat.jpg") -> int:
    return jobs_table.open_attempt(job, key, key.replace(".jpg", ".json"), "2026-11-24T12:00:00.000Z").attempt


def test_each_new_upload_of_a_key_is_the_next_attempt_and_a_repeat_keeps_its_number(aws: Aws) -> None:
    assert _open("cat-1") == 1
    assert _open("cat-1") == 1  # the same upload seen again (a re-delivered event, the sidecar's event)
    assert _open("cat-2") == 2
    assert _open("dog-1", "incoming/a/dog.jpg") == 1
    item = jobs_table.get_job("cat-2")
    assert item is not None and (item["state"], item["source_key"], item["attempt"]) == ("accepted", "incoming/a/cat.jpg", 2)
    assert item["expires_at"] > item["rank"]  # a TTL is set (epoch seconds)


def test_uploads_racing_for_one_key_get_different_attempt_numbers(aws: Aws) -> None:
    serialize_dynamodb_requests()  # as local mode runs it: each DynamoDB request atomic, as on AWS
    lost: list[str] = []

    def upload(index: int) -> int:
        while True:  # the one that loses a race is told to look again later, as Accept does
            try:
                return _open(f"cat-{index}")
            except AwsTransient as exc:
                lost.append(exc.message)

    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(upload, range(12)))
    assert sorted(numbers) == list(range(1, 13))
    assert all("took attempt number" in message for message in lost)


def test_a_state_never_goes_back(aws: Aws) -> None:
    _open("cat-1")
    assert jobs_table.record("cat-1", "running", polls=3, progress_percent=40)
    assert not jobs_table.record("cat-1", "submitted", task_id="late")  # a late, repeated submit step
    assert jobs_table.record("cat-1", "running", polls=4, progress_percent=70)
    assert jobs_table.record("cat-1", "failed", error_code="PROVIDER_FAILED")
    assert not jobs_table.record("cat-1", "running", polls=5)
    assert not jobs_table.record("cat-1", "succeeded")  # one outcome per job, like its notice
    assert jobs_table.record("cat-1", "failed", error_code="PROVIDER_FAILED")  # the same outcome again is fine
    item = jobs_table.get_job("cat-1")
    assert item is not None and (item["state"], item["polls"], item["progress_percent"], item["error_code"]) == (
        "failed",
        4,
        70,
        "PROVIDER_FAILED",
    )
    assert "task_id" not in item


def test_by_state_and_by_source_are_queries(aws: Aws) -> None:
    for index in range(3):
        _open(f"cat-{index}")
    jobs_table.record("cat-0", "failed", error_code="INVALID_SIDECAR")
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    table = aws.stack.id("JobsTable")
    failed = dynamodb.query(
        TableName=table,
        IndexName=jobs_table.BY_STATE_INDEX,
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": "failed"}},
    )["Items"]
    assert [item["job_id"]["S"] for item in failed] == ["cat-0"]
    attempts = dynamodb.query(
        TableName=table,
        IndexName=jobs_table.BY_SOURCE_INDEX,
        KeyConditionExpression="source_key = :k",
        ExpressionAttributeValues={":k": {"S": "incoming/a/cat.jpg"}},
    )["Items"]
    assert sorted(int(item["attempt"]["N"]) for item in attempts) == [1, 2, 3]  # the counter item is in neither index


def test_the_daily_limit_is_never_exceeded_by_concurrent_submits_and_a_job_counts_once(aws: Aws) -> None:
    serialize_dynamodb_requests()
    for index in range(20):
        _open(f"job-{index}", f"incoming/{index}.jpg")
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda i: jobs_table.claim_submission(f"job-{i}", 5, 86400), range(20)))
    allowed = [index for index, opens in enumerate(answers) if opens is None]
    assert len(allowed) == 5  # exactly the limit, however the 20 raced
    held = {opens for opens in answers if opens is not None}
    assert len(held) == 1 and next(iter(held)) % 86400 == 0  # held until the next UTC midnight
    assert jobs_table.claim_submission(f"job-{allowed[0]}", 5, 86400) is None  # a retried submit is not counted again
    assert all(jobs_table.claim_submission(f"job-{i}", 5, 86400) is not None for i in range(20) if i not in allowed)


def test_generation_times_are_kept_per_kind_in_a_bounded_ring(aws: Aws) -> None:
    key = history_key("vidu-q2-turbo-img2video", "720p", 5, False)
    assert jobs_table.kind_history(key).samples == []  # no history yet: the policy polls as without one
    for index in range(400):
        jobs_table.record_generation_time(key, f"job-{index}", 60 + index % 7)
    times = jobs_table.kind_history(key).samples
    assert 100 <= len(times) <= jobs_table.HISTORY_SLOTS and set(times) <= {float(60 + i) for i in range(7)}
    other = history_key("vidu-q2-turbo-img2video", "1080p", 5, False)
    assert jobs_table.kind_history(other).samples == []  # another kind has its own


def test_a_kinds_first_job_with_a_webhook_keeps_its_generation_time(aws: Aws) -> None:
    """The kind has times from jobs without webhooks (Webhook was off), and this is its first job that asked for one:
    its maps of webhooks do not exist yet, and its time must still be kept."""
    key = history_key("vidu-q2-turbo-img2video", "720p", 5, False)
    jobs_table.record_generation_time(key, "before", 50)
    jobs_table.record_generation_time(key, "with-webhook", 70, "arrived")
    history = jobs_table.kind_history(key)
    assert sorted(history.samples) == [50.0, 70.0] and history.webhook_arrivals == [True]


def test_a_submitted_job_of_a_known_kind_first_polls_when_its_kind_can_be_done(aws: Aws) -> None:
    from img2video.core.settings import get_settings
    from img2video.core.sidecar import VideoRequest
    from img2video.steps.submit import submitted_output

    request = VideoRequest(prompt="p", duration=5, resolution="720p", movement_amplitude="auto")
    job = jobs_table_job(request)
    for index in range(60):
        jobs_table.record_generation_time(job.history_key, f"earlier-{index}", 80 + index % 20)
    output = submitted_output(job, {"task_id": "t", "submitted_at": "2026-11-25T12:00:00.000Z"}, get_settings())
    assert output.first_poll.wait_seconds is not None and output.first_poll.wait_seconds >= 60  # never done sooner than 80 s
    plan = output.first_poll.plan
    assert plan is not None and plan.first == output.first_poll.wait_seconds and plan.spacing
    fresh = jobs_table_job(VideoRequest(prompt="p", duration=2, resolution="540p", movement_amplitude="auto"))
    unknown_kind = submitted_output(fresh, {"task_id": "t", "submitted_at": "2026-11-25T12:00:00.000Z"}, get_settings())
    assert unknown_kind.first_poll.wait_seconds == 5  # a kind never seen: after PollMinSeconds, as always


def jobs_table_job(request: Any) -> Any:
    from img2video.core.jobs import Job, SourceObject

    return Job(
        job_id="j-1", source=SourceObject(bucket="b", key="incoming/x.jpg"), request=request, video_key="v.mp4", manifest_key="v.json"
    )


def test_only_the_call_that_creates_a_job_says_it_is_new(aws: Aws) -> None:
    first = jobs_table.open_attempt("cat-1", "incoming/a/cat.jpg", "incoming/a/cat.json", "2026-11-24T12:00:00.000Z")
    again = jobs_table.open_attempt("cat-1", "incoming/a/cat.jpg", "incoming/a/cat.json", "2026-11-24T12:00:00.000Z")
    assert (first.attempt, first.new) == (1, True) and (again.attempt, again.new) == (1, False)
