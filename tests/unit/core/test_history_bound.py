"""No job can reach Step Functions' 25,000-event history, whatever the provider's eta says."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from img2video.core.wait_policy import MAX_POLLS, WaitPolicy

# Events per poll loop: the wait, as a callback for the webhook (6: entered, scheduled, started, submitted, timed out or
# failed, exited) and, when the table refused its token for a fault, the Wait state after it (2); the Lambda task (5:
# entered, scheduled, started, succeeded, exited); the Choice (2). Each Retry of the task adds up to 4 more (failed,
# scheduled, started, and the wait), with as many retries as its Retry list allows (read from the ASL).
EVENTS_PER_POLL = 6 + 2 + 5 + 2
EVENTS_PER_RETRY = 4


def _retries(state: str) -> int:
    import json

    from img2video_local.template import REPO_ROOT

    asl = json.loads((REPO_ROOT / "statemachine" / "video_job.asl.json").read_text(encoding="utf-8"))
    return sum(int(rule["MaxAttempts"]) for rule in asl["States"][state]["Retry"])


EVENTS_PER_RETRIED_POLL = EVENTS_PER_POLL + _retries("CheckVideoTask") * EVENTS_PER_RETRY
# submit, notice, start and end (60), and the store and the notice with every retry spent (Lambda throttled for hours)
EVENTS_OUTSIDE_POLLS = 60 + (_retries("StoreVideo") + _retries("PublishNotice")) * EVENTS_PER_RETRY
# The daily limit holds a job at most once per window that opens within its submit window (SubmitWindowSeconds,
# at most 7 days, windows of one day): each hold is the submit task (6), the Choice (2) and the Wait (2).
EVENTS_PER_HOLD = 10
MAX_HOLDS = 7 * 86400 // 86400 + 1


def test_even_if_every_poll_spent_every_retry_the_history_stays_under_25000_events() -> None:
    assert MAX_POLLS * EVENTS_PER_RETRIED_POLL + MAX_HOLDS * EVENTS_PER_HOLD + EVENTS_OUTSIDE_POLLS < 25_000


def test_the_submit_window_bounds_the_holds() -> None:
    from img2video_local.template import load_template

    window = load_template()["Parameters"]["SubmitWindowSeconds"]
    assert window["MaxValue"] <= (MAX_HOLDS - 1) * 86400


@settings(max_examples=200, deadline=None)
@given(
    eta=st.one_of(st.none(), st.floats(min_value=0, max_value=10)),
    max_wait_hours=st.sampled_from([0.5, 2, 48]),
    min_seconds=st.integers(1, 10),
)
def test_an_eta_that_always_says_almost_done_still_polls_a_bounded_number_of_times(
    eta: float | None, max_wait_hours: float, min_seconds: int
) -> None:
    # the provider keeps saying "a second left" for a 48 h off-peak task: polls must still fit the budget
    policy = WaitPolicy(min_seconds, 900)
    remaining, polls, wait = max_wait_hours * 3600, 0, None
    while remaining > 0:
        wait = policy.bounded(policy.next_wait(wait, eta=eta), remaining, polls)
        remaining -= wait
        polls += 1
        assert polls <= MAX_POLLS
