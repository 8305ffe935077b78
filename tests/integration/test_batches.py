"""Batch manifests through the whole pipeline in local mode: each line a job exactly as a dropped pair would be, bad
lines refused with their own notice, and one `batch.completed` notice once every line has ended."""

from __future__ import annotations

import json
from typing import Any

import pytest
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline, Received

from tests.conftest import API_KEY, jpeg_bytes
from tests.integration.test_pipeline import FAST, wait_until

pytestmark = pytest.mark.integration


def jsonl(*lines: Any) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def batch_notices(local: LocalPipeline, manifest: str, count: int = 1, timeout: float = 180) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]]:
        found = [r.notice for r in list(local.notices) if r.notice["event"] == "batch.completed"]
        found = [n for n in found if n["manifest"]["key"] == manifest]
        return found if len(found) >= count else []

    assert wait_until(done, timeout), [r.notice["event"] for r in local.notices]
    return done()


def line_notices(local: LocalPipeline, batch_id: str) -> list[Received]:
    return [r for r in list(local.notices) if (r.notice.get("batch") or {}).get("batch_id") == batch_id]


def test_each_line_is_a_job_bad_lines_get_their_own_notice_and_the_batch_one_at_the_end() -> None:
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults())
    with LocalPipeline(emulator_config=config) as local:
        local.upload("incoming/shoot/cat.jpg", jpeg_bytes(640, 400))
        local.upload("incoming/shoot/dog.jpg", jpeg_bytes(640, 400))
        manifest = jsonl(
            {"image": "cat.jpg", "prompt": "a cat yawns"},
            "",
            {"image": "dog.jpg", "prompt": "a dog runs", "duration": 99},
            "{not json",
            {"image": "cat.jpg", "prompt": "the cat again", "tags": {"take": "2"}},
            {"image": "missing.jpg", "prompt": "nothing there"},
        )
        local.upload("incoming/shoot/shoot.batch.jsonl", manifest)
        [batch] = batch_notices(local, "incoming/shoot/shoot.batch.jsonl")
        lines = line_notices(local, batch["batch_id"])
    assert batch["lines"] == 5 and batch["counts"] == {"succeeded": 2, "failed": 3, "cancelled": 0}
    assert batch["failed_lines"] == [3, 4, 6] and batch["attempt"] == 1 and batch["error"] is None
    by_line = {r.notice["batch"]["line"]: r.notice for r in lines}
    assert sorted(by_line) == [1, 3, 4, 5, 6] and len(lines) == 5  # one notice per line
    assert by_line[3]["error"]["code"] == "INVALID_SIDECAR" and by_line[3]["error"]["message"].startswith("line 3: ")
    assert '"duration"' in by_line[3]["error"]["message"]
    assert "line 4 is not a JSON object" in by_line[4]["error"]["message"]
    assert "does not exist" in by_line[6]["error"]["message"] and "missing.jpg" in by_line[6]["error"]["message"]
    assert by_line[1]["video"]["key"] == "videos/shoot/shoot/00001-cat.mp4"
    assert by_line[5]["video"]["key"] == "videos/shoot/shoot/00005-cat.mp4" and by_line[5]["tags"] == {"take": "2"}
    assert by_line[1]["source"]["key"] == "incoming/shoot/cat.jpg"
