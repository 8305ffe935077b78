"""Poll: one look at the task, and how long to wait before the next."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from img2video.clock import iso, now, parse_iso
from img2video.errors import ProviderFailed, ProviderTimeout
from img2video.jobs import ExecutionState, PollRecord
from img2video.novita import NovitaClient, TaskStatus, load_api_key
from img2video.observability import logger, metrics
from img2video.settings import get_settings
from img2video.wait_policy import policy_for


def poll_task(state: ExecutionState) -> PollRecord:
    """Return the new `poll` record; raise ProviderFailed / ProviderTimeout to end the job."""
    settings = get_settings()
    task_id = state.task_id
    polls = state.poll.polls + 1
    off_peak = state.job.request.off_peak
    client = NovitaClient(settings.novita_base_url, load_api_key(settings.novita_secret_id))
    task = client.task_result(task_id).task
    status = task.task_status
    logger.info("Polled", extra={"task_id": task_id, "status": task.status, "progress": task.progress_percent, "polls": polls})

    if status is TaskStatus.SUCCEED:
        metrics.add_metric(name="PollsPerJob", unit=MetricUnit.Count, value=polls)
        return PollRecord(status="succeeded", polls=polls, progress_percent=100, finished_at=iso(now()))
    if status is TaskStatus.FAILED:
        metrics.add_metric(name="PollsPerJob", unit=MetricUnit.Count, value=polls)
        raise ProviderFailed(f"Novita could not generate the video: {task.reason or 'no reason given'}")
    if status is TaskStatus.UNKNOWN:
        logger.warning("Unknown task status; treating it as running", extra={"status": task.status})

    remaining = state.deadline - now()
    if remaining <= 0:
        max_wait = settings.max_wait_minutes_off_peak if off_peak else settings.max_wait_minutes
        raise ProviderTimeout(
            f"the task was not finished after {max_wait:g} minutes "
            f"(last status {task.status or 'unknown'}, {task.progress_percent or 0:.0f}% done)"
        )
    wait = policy_for(settings, off_peak).next_wait(
        previous_wait=state.poll.wait_seconds,
        eta=task.eta,
        progress_percent=task.progress_percent,
        elapsed_seconds=now() - parse_iso(state.submitted_at),
    )
    # never sleep far past the deadline: the last poll should come right after it
    wait = max(1, min(wait, int(remaining) + 1))
    return PollRecord(status="running", polls=polls, progress_percent=task.progress_percent or 0, eta=task.eta, wait_seconds=wait)
