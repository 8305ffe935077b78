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


@dataclass(frozen=True)
class TurnedAway:
    """What a job not submitted this time does next (steps/submit.py carries it out)."""

    back_in_line_only: bool  # woken, then turned away all the same: its entry goes back; its own retry is still queued
    joins_line: bool  # turned away for want of a slot, with no entry yet: it takes one, besides its own retry


def turned_away(in_line: bool, woken: bool, throttled: bool) -> TurnedAway:
    """A job that could not be submitted now: `throttled` when it was for want of a task slot (Novita said so, or
    others already wait in line), else a passing fault."""
    return TurnedAway(back_in_line_only=throttled and woken, joins_line=throttled and not in_line)


def retry_flags(in_line: bool, woken: bool, throttled: bool, joined: bool) -> tuple[bool, bool]:
    """The (in_line, woken) of the job's own retry: it has an entry once it joined; a woken job kept from asking by a
    passing fault is still woken, but turned away for want of a slot it waits its turn again."""
    return in_line or joined, woken and not throttled
