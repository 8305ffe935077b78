"""Poll: one look at the Novita task, and the next wait."""

from __future__ import annotations

import time
from typing import Any

import pytest
import responses
from img2video.core.errors import ProviderFailed, ProviderTimeout
from img2video.core.wait_policy import MAX_POLLS

from tests.conftest import API_KEY, Aws
from tests.unit.steps.support import RESULT_URL, job_dict, novita_calls, poll, result, state_dict


@responses.activate
def test_a_running_task_is_looked_at_again_about_when_its_eta_says(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING", eta="30", progress_percent=40))
    answer = poll(aws, state_dict())
    assert answer["status"] == "running" and answer["polls"] == 1 and answer["progress_percent"] == 40
    assert answer["wait_seconds"] == 20  # the eta's lower end (30 s / 1.5): no poll can see the task done before
    [call] = novita_calls(RESULT_URL)
    assert "task_id=task-1" in call.request.url and call.request.headers["Authorization"] == f"Bearer {API_KEY}"


@responses.activate
def test_waits_stay_within_their_bounds(aws: Aws) -> None:
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
def test_a_finished_task_is_reported_succeeded(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED", progress_percent=100))
    answer = poll(aws, state_dict(poll={"status": "running", "polls": 2, "wait_seconds": 8}))
    assert answer["status"] == "succeeded" and answer["polls"] == 3 and answer["finished_at"] and answer["progress_percent"] == 100


@responses.activate
def test_a_failed_task_raises_provider_failed_with_its_reason(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_FAILED", reason="image violates policy"))
    with pytest.raises(ProviderFailed, match="image violates policy"):
        poll(aws, state_dict())


@responses.activate
def test_past_the_deadline_provider_timeout_is_raised(aws: Aws) -> None:
    responses.get(RESULT_URL, json=result("TASK_STATUS_PROCESSING", progress_percent=42))
    state = state_dict()
    state["submitted"]["deadline"] = time.time() - 1
    with pytest.raises(ProviderTimeout, match=r"not finished after 30 minutes .*42% done"):
        poll(aws, state)


@responses.activate
def test_reaching_the_most_polls_raises_provider_timeout_whatever_the_deadline(aws: Aws) -> None:
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
