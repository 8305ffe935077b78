"""The line for task slots, decided: at a task's end, whom to wake and what to do with every entry looked at.

aws/slot_line.py reads the line and the jobs' states and carries out this decision; the decision itself needs
neither SQS nor DynamoDB."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LineLook:
    woken: int | None  # the entry whose job goes to the SubmitQueue now, if any
    leave: tuple[int, ...]  # entries that leave the line: the woken one, and those of jobs no longer waiting
    back: tuple[int, ...]  # entries that go back to the line at once, in the order they were seen


def whom_to_wake(job_ids: list[str | None], waiting: set[str]) -> LineLook:
    """The entries seen at the head of the line (their job ids, None for an entry without one) and the jobs that
    still wait to be submitted: the first waiting job is woken; a job submitted since (by its own retry) leaves."""
    woken = next((index for index, job_id in enumerate(job_ids) if job_id in waiting), None)
    leave = tuple(index for index, job_id in enumerate(job_ids) if index == woken or job_id not in waiting)
    back = tuple(index for index in range(len(job_ids)) if index not in leave)
    return LineLook(woken, leave, back)
