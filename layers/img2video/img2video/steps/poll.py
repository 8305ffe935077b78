"""Poll: one look at the task, and how long to wait before the next."""

from __future__ import annotations

import math

from aws_lambda_powertools.metrics import MetricUnit

from img2video.aws import slot_line
from img2video.aws.job_events import job_changed
from img2video.aws.jobs_table import record_quietly
from img2video.aws.secrets import novita_client
from img2video.aws.task_item import remember_video
from img2video.core.clock import iso, now, parse_iso
from img2video.core.errors import PipelineError, ProviderFailed, ProviderTimeout
from img2video.core.jobs import ExecutionState, PollRecord
from img2video.core.settings import get_settings
from img2video.core.wait_policy import MAX_POLLS, policy_for
from img2video.novita.models import TaskStatus
from img2video.observability import logger, metrics


def poll_task(state: ExecutionState) -> PollRecord:
    """Return the new `poll` record; raise ProviderFailed / ProviderTimeout to end the job.

    One HTTP attempt, never a sleep: a busy or unreachable provider is just a poll that learned nothing,
    and the state machine's free Wait state does the waiting (honouring Retry-After).
    """
    settings = get_settings()
    submitted = state.submitted
    if submitted is None:
        raise ProviderFailed("the job reached its poll without a submitted task")
    task_id, polls, off_peak = submitted.task_id, state.poll.polls + 1, state.job.request.off_peak
    policy = policy_for(settings, off_peak)
    remaining = submitted.deadline - now()
    try:
        result = novita_client(settings.novita_base_url, settings.novita_secret_id).task_result(task_id)
    except PipelineError as exc:
        if not exc.transient:
            raise
        logger.warning("Poll saw a passing provider fault", extra={"task_id": task_id, "error": exc.message, "polls": polls})
        _give_up_if_late(remaining, polls, state, f"Novita did not answer the last poll: {exc.message}")
        wait = max(policy.next_wait(state.poll.wait_seconds, plan=state.poll.plan, polls=polls), math.ceil(exc.retry_after or 0))
        return state.poll.model_copy(
            update={"polls": polls, "wait_seconds": policy.bounded(wait, remaining, polls), "last_error": exc.message}
        )
    task = result.task
    status = task.task_status
    logger.info("Polled", extra={"task_id": task_id, "status": task.status, "progress": task.progress_percent, "polls": polls})

    if status in (TaskStatus.SUCCEED, TaskStatus.FAILED):
        slot_line.task_ended(task_id)  # the task's slot at Novita is free: a job turned away for want of one goes now
    if status is TaskStatus.SUCCEED:
        metrics.add_metric(name="PollsPerJob", unit=MetricUnit.Count, value=polls)
        remember_video(task_id, result)  # Store downloads from this URL instead of asking Novita again
        finished_at = iso(now())
        record_quietly(state.job.job_id, "storing", polls=polls, progress_percent=100, finished_at=finished_at)
        return PollRecord(status="succeeded", polls=polls, progress_percent=100, finished_at=finished_at, detected_by="poll")
    if status is TaskStatus.FAILED:
        metrics.add_metric(name="PollsPerJob", unit=MetricUnit.Count, value=polls)
        raise ProviderFailed(f"Novita could not generate the video: {task.reason or 'no reason given'}")
    if status is TaskStatus.UNKNOWN:
        logger.warning("Unknown task status; treating it as running", extra={"status": task.status})

    _give_up_if_late(remaining, polls, state, f"last status {task.status or 'unknown'}, {task.progress_percent or 0:.0f}% done")
    record_quietly(state.job.job_id, "running", polls=polls, progress_percent=task.progress_percent or 0, task_id=task_id)
    job_changed(state.job, "running", progress=task.progress_percent or 0, task_id=task_id, eta_seconds=task.eta)
    wait = policy.next_wait(
        previous_wait=state.poll.wait_seconds,
        eta=task.eta,
        progress_percent=task.progress_percent,
        elapsed_seconds=now() - parse_iso(submitted.submitted_at),
        plan=state.poll.plan,
        polls=polls,
    )
    return PollRecord(
        status="running",
        polls=polls,
        progress_percent=task.progress_percent or 0,
        eta=task.eta,
        wait_seconds=policy.bounded(wait, remaining, polls),
        plan=state.poll.plan,
    )


def _give_up_if_late(remaining: float, polls: int, state: ExecutionState, last_seen: str) -> None:
    if remaining > 0 and polls < MAX_POLLS:
        return
    settings = get_settings()
    max_wait = settings.max_wait_minutes_off_peak if state.job.request.off_peak else settings.max_wait_minutes
    raise ProviderTimeout(f"the task was not finished after {max_wait:g} minutes ({polls} polls; {last_seen})")
