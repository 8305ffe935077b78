"""The line for task slots, decided without SQS or DynamoDB: whom a task's end wakes, and what leaves the line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from img2video.core.line import retry_flags, turned_away, whom_to_wake


def test_the_first_job_still_waiting_is_woken_and_jobs_submitted_since_leave_the_line() -> None:
    look = whom_to_wake(["done-1", None, "waits-1", "done-2", "waits-2"], waiting={"waits-1", "waits-2"})
    assert look.woken == 2
    assert look.leave == (0, 1, 2, 3)  # the woken one, and the entries of jobs no longer waiting (or with no job)
    assert look.back == (4,)  # the next in line keeps its place


def test_nobody_is_woken_when_nobody_in_view_waits() -> None:
    look = whom_to_wake(["done-1", "done-2"], waiting=set())
    assert (look.woken, look.leave, look.back) == (None, (0, 1), ())


@given(st.lists(st.sampled_from(["a", "b", "c", "d", None]), max_size=10), st.sets(st.sampled_from(["a", "b", "c", "d"])))
def test_every_entry_looked_at_either_leaves_or_goes_back_and_at_most_one_is_woken(job_ids: list[str | None], waiting: set[str]) -> None:
    look = whom_to_wake(job_ids, waiting)
    assert sorted(look.leave + look.back) == list(range(len(job_ids)))  # none lost, none twice
    assert all(job_ids[index] in waiting for index in look.back)  # only waiting jobs keep a place
    if look.woken is None:
        assert not any(job_id in waiting for job_id in job_ids)
    else:
        assert job_ids[look.woken] in waiting and all(job_ids[i] not in waiting for i in range(look.woken))


def test_a_woken_job_turned_away_again_only_goes_back_in_line_its_retry_is_already_queued() -> None:
    plan = turned_away(in_line=True, woken=True, throttled=True)
    assert plan.back_in_line_only and not plan.joins_line


def test_a_job_turned_away_for_a_slot_joins_the_line_once_and_a_passing_fault_never_joins() -> None:
    assert turned_away(in_line=False, woken=False, throttled=True).joins_line
    assert not turned_away(in_line=True, woken=False, throttled=True).joins_line  # it has its entry
    assert turned_away(in_line=False, woken=True, throttled=False) == turned_away(in_line=False, woken=False, throttled=False)
    assert not turned_away(in_line=False, woken=False, throttled=False).joins_line


def test_a_retry_keeps_its_entry_and_stays_woken_only_through_a_passing_fault() -> None:
    assert retry_flags(in_line=False, woken=False, throttled=True, joined=True) == (True, False)
    assert retry_flags(in_line=False, woken=False, throttled=True, joined=False) == (False, False)  # the join failed
    assert retry_flags(in_line=True, woken=True, throttled=False, joined=False) == (True, True)  # still its turn
    assert retry_flags(in_line=True, woken=True, throttled=True, joined=False) == (True, False)
