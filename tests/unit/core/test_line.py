"""The line for task slots, decided without SQS or DynamoDB: whom a task's end wakes, and what leaves the line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from img2video.core.line import whom_to_wake


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
