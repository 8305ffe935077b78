"""The sample events in events/ (for `sam local invoke -e`) are the shapes the handlers take."""

from __future__ import annotations

import json

from img2video.failure import notice_for_failed_state
from img2video.jobs import ExecutionState, Job
from img2video.submit import triggers_from_body
from img2video_local.template import REPO_ROOT

EVENTS = REPO_ROOT / "events"


def load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def test_submit_events_decode_to_the_keys_users_uploaded() -> None:
    [image] = triggers_from_body(load("submit_s3_put_image.json")["Records"][0]["body"])
    [sidecar] = triggers_from_body(load("submit_s3_put_sidecar.json")["Records"][0]["body"])
    assert (image.key, sidecar.key) == ("incoming/a/my cat.jpg", "incoming/a/my cat.json")
    assert triggers_from_body(load("submit_s3_test_event.json")["Records"][0]["body"]) == []


def test_state_machine_inputs_hold_a_valid_job() -> None:
    for name in ("poll_input.json", "store_input.json", "notify_input.json"):
        assert Job.model_validate(load(name)["job"]).job_id == "my-cat-1f3a9c0d2b"
    notice = notice_for_failed_state(ExecutionState.model_validate(load("notify_input.json")))
    assert notice.error is not None and notice.error.code == "PROVIDER_FAILED"
