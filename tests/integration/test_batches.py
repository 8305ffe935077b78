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
from tests.integration.test_job_events import received, with_events
from tests.integration.test_pipeline import FAST, pipeline, wait_until

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
        local.upload("incoming/shoot.batch/cat.jpg", jpeg_bytes(640, 400))
        local.upload("incoming/shoot.batch/dog.jpg", jpeg_bytes(640, 400))
        manifest = jsonl(
            {"image": "cat.jpg", "prompt": "a cat yawns"},
            "",
            {"image": "dog.jpg", "prompt": "a dog runs", "duration": 99},
            "{not json",
            {"image": "cat.jpg", "prompt": "the cat again", "tags": {"take": "2"}},
            {"image": "missing.jpg", "prompt": "nothing there"},
            '{"image": "cat.jpg", "prompt": "half an emoji \\ud83d"}',  # a lone surrogate: this line's problem only
            '{"image": "cat.jpg", "x": ' + "[" * 5000 + "]" * 5000 + "}",
            {"image": "dog.jpg", "prompt": "after the worst lines"},
        )
        local.upload("incoming/shoot.batch/shoot.batch.jsonl", manifest)
        [batch] = batch_notices(local, "incoming/shoot.batch/shoot.batch.jsonl")
        lines = line_notices(local, batch["batch_id"])
    assert batch["lines"] == 8 and batch["counts"] == {"succeeded": 3, "failed": 5, "cancelled": 0}
    assert batch["failed_lines"] == [3, 4, 6, 7, 8] and batch["attempt"] == 1 and batch["error"] is None
    by_line = {r.notice["batch"]["line"]: r.notice for r in lines}
    assert sorted(by_line) == [1, 3, 4, 5, 6, 7, 8, 9] and len(lines) == 8  # one notice per line
    assert by_line[7]["error"]["code"] == "INVALID_SIDECAR" and '"prompt"' in by_line[7]["error"]["message"]
    assert by_line[8]["error"]["message"].startswith("line 8 has JSON nested too deeply")
    assert by_line[9]["event"] == "video.succeeded"  # the lines after them in their chunk were not taken down
    assert by_line[3]["error"]["code"] == "INVALID_SIDECAR" and by_line[3]["error"]["message"].startswith("line 3: ")
    assert '"duration"' in by_line[3]["error"]["message"]
    assert "line 4 is not a JSON object" in by_line[4]["error"]["message"]
    assert "does not exist" in by_line[6]["error"]["message"] and "missing.jpg" in by_line[6]["error"]["message"]
    assert by_line[1]["video"]["key"] == "videos/shoot.batch/shoot/00001-cat.mp4"
    assert by_line[5]["video"]["key"] == "videos/shoot.batch/shoot/00005-cat.mp4" and by_line[5]["tags"] == {"take": "2"}
    assert by_line[1]["source"]["key"] == "incoming/shoot.batch/cat.jpg"
    assert len(local.notices) == 9  # the lines' and the batch's: the images of a .batch folder are no pairs


def test_a_manifest_uploaded_twice_is_two_attempts_and_repeated_events_change_nothing() -> None:
    with pipeline(faults="dup=1") as local:  # S3 delivers every event twice
        local.upload("incoming/tide.batch/sea.jpg", jpeg_bytes(640, 400))
        manifest = jsonl({"image": "sea.jpg", "prompt": "waves"}, {"image": "sea.jpg", "prompt": "storm", "duration": 0})
        local.upload("incoming/tide.batch/tide.batch.jsonl", manifest)
        [first] = batch_notices(local, "incoming/tide.batch/tide.batch.jsonl")
        local.upload("incoming/tide.batch/tide.batch.jsonl", manifest)  # the user's retry: the same bytes again
        batches = batch_notices(local, "incoming/tide.batch/tide.batch.jsonl", count=2)
        local.wait_for_notices({"(late duplicates)"}, 3)  # a duplicate notice would show up by now
        batches = [r.notice for r in local.notices if r.notice["event"] == "batch.completed"]
        second = next(b for b in batches if b["batch_id"] != first["batch_id"])
        lines = line_notices(local, first["batch_id"]) + line_notices(local, second["batch_id"])
    assert len(batches) == 2 and (first["attempt"], second["attempt"]) == (1, 2)
    assert first["counts"] == second["counts"] == {"succeeded": 1, "failed": 1, "cancelled": 0}
    assert sorted((r.notice["attempt"], r.notice["batch"]["line"]) for r in lines) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert len(local.emulator.submissions) == 2  # one paid generation per attempt of the good line, none for the bad
    assert local.event_keys.count((local.input_bucket, "incoming/tide.batch/tide.batch.jsonl")) >= 4


def test_a_csv_manifest_types_its_cells_and_a_row_with_the_wrong_cells_is_its_own_failure() -> None:
    with pipeline() as local:
        local.upload("incoming/a.batch/cat.jpg", jpeg_bytes(640, 400))
        rows = 'image,prompt,duration,tags.client\ncat.jpg,"a cat, yawning",5,acme\ncat.jpg,short row\n\ncat.jpg,"a cat",99,acme\n'
        local.upload("incoming/a.batch/cats.batch.csv", rows.encode())
        [batch] = batch_notices(local, "incoming/a.batch/cats.batch.csv")
        by_line = {r.notice["batch"]["line"]: r.notice for r in line_notices(local, batch["batch_id"])}
    assert batch["lines"] == 3 and batch["failed_lines"] == [3, 5]
    assert by_line[2]["event"] == "video.succeeded" and by_line[2]["request"]["duration"] == 5 and by_line[2]["tags"] == {"client": "acme"}
    assert by_line[2]["request"]["prompt"] == "a cat, yawning"
    assert by_line[3]["error"]["message"] == "line 3 has 2 cells; the header names 4 columns"
    assert by_line[5]["error"]["code"] == "INVALID_SIDECAR" and '"duration"' in by_line[5]["error"]["message"]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("latin.batch.jsonl", '{"image": "café.jpg"}'.encode("latin-1"), "is not UTF-8 text"),
        ("noimage.batch.csv", b"picture,prompt\ncat.jpg,a cat\n", 'must name the columns, one of them "image"'),
    ],
)
def test_a_manifest_that_cannot_be_read_ends_in_one_batch_notice_saying_why(name: str, data: bytes, expected: str) -> None:
    with pipeline() as local:
        local.upload(f"incoming/{name}", data)
        [batch] = batch_notices(local, f"incoming/{name}")
    assert batch["error"]["code"] == "INVALID_MANIFEST" and expected in batch["error"]["message"]
    assert batch["lines"] == 0 and [r.notice["event"] for r in local.notices] == ["batch.completed"]
    assert not local.emulator.submissions


def test_every_aws_call_of_a_batch_failing_once_still_gives_one_notice_per_line_and_one_payment() -> None:
    faults = "BatchFunction:*.*:once;AcceptFunction:stepfunctions.StartExecution:once"
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults())
    # time_scale: an idempotency record left in progress (a DeleteItem lost) is free again once its invocation's time
    # is over, 900 s on AWS; a tenth of it here
    with LocalPipeline(emulator_config=config, aws_faults=faults, aws_faults_seed=5, time_scale=0.1) as local:
        local.upload("incoming/f.batch/cat.jpg", jpeg_bytes(640, 400))
        local.upload(
            "incoming/f.batch/f.batch.jsonl",
            jsonl({"image": "cat.jpg", "prompt": "a"}, {"image": "cat.jpg", "prompt": "b"}, {"image": "x.gif"}),
        )
        [batch] = batch_notices(local, "incoming/f.batch/f.batch.jsonl", timeout=240)
        local.wait_for_notices({"(late duplicates)"}, 3)
        lines = line_notices(local, batch["batch_id"])
    assert sorted(r.notice["batch"]["line"] for r in lines) == [1, 2, 3]
    assert batch["counts"] == {"succeeded": 2, "failed": 1, "cancelled": 0} and batch["failed_lines"] == [3]
    assert len(local.emulator.submissions) == 2 and local.faults.fired


def test_the_batch_completed_event_follows_the_lines_events_which_name_their_batch() -> None:
    with with_events() as (local, queue):
        local.upload("incoming/e.batch/cat.jpg", jpeg_bytes(640, 400))
        local.upload("incoming/e.batch/e.batch.jsonl", jsonl({"image": "cat.jpg", "prompt": "a cat"}, {"image": "cat.jpg"}))
        [notice] = batch_notices(local, "incoming/e.batch/e.batch.jsonl")
        events = received(local, queue, "completed")
    [completed] = [e for e in events if e["detail-type"] == "Video Batch State Change"]
    assert completed["source"] == "img2video" and completed["detail"]["notice_id"] == notice["notice_id"]
    assert completed["detail"]["counts"] == notice["counts"] == {"succeeded": 1, "failed": 1, "cancelled": 0}
    jobs = [e["detail"] for e in events if e["detail-type"] == "Video Job State Change"]
    assert {d["batch"]["line"] for d in jobs} == {1, 2} and all(d["batch"]["batch_id"] == notice["batch_id"] for d in jobs)
    ends = [d for d in jobs if d["state"] in ("succeeded", "failed")]
    assert len(ends) == 2 and all(d["changed_at"] <= completed["detail"]["changed_at"] for d in ends)


def test_two_lines_never_write_one_video_and_the_second_is_refused_before_it_is_paid() -> None:
    with pipeline() as local:
        local.upload("incoming/o.batch/cat.jpg", jpeg_bytes(640, 400))
        same = {"image": "cat.jpg", "prompt": "a cat", "output_name": "hero"}
        local.upload(
            "incoming/o.batch/o.batch.jsonl",
            jsonl(same, same, {"image": "cat.jpg", "prompt": "a cat", "output_name": "00004-cat"}, {"image": "cat.jpg", "prompt": "a cat"}),
        )
        [batch] = batch_notices(local, "incoming/o.batch/o.batch.jsonl")
        local.upload("incoming/o.batch/o.batch.csv", b"image,prompt,output_name\ncat.jpg,a cat,hero\n")  # the same folder of videos
        [other] = batch_notices(local, "incoming/o.batch/o.batch.csv")
        by_line = {r.notice["batch"]["line"]: r.notice for r in line_notices(local, batch["batch_id"])}
        [csv_line] = [r.notice for r in line_notices(local, other["batch_id"])]
    assert batch["counts"] == {"succeeded": 2, "failed": 2, "cancelled": 0}  # one of each colliding pair
    refused = [n for n in by_line.values() if n["event"] == "video.failed"]
    assert all('give "output_name" a name no other line uses' in n["error"]["message"] for n in refused)
    assert len({n["video"]["key"] for n in by_line.values() if n["video"]}) == 2 and len(local.emulator.submissions) == 2
    assert "is line 1 of incoming/o.batch/o.batch.jsonl's" in csv_line["error"]["message"] or "is line 2 of" in csv_line["error"]["message"]


def test_a_chunk_that_fails_every_try_still_ends_each_of_its_lines_in_one_notice_and_nothing_is_paid() -> None:
    # every StartExecution of the lines step fails (AWS stays throttled past all 20 tries), and so do the first 25
    # DescribeExecution calls: the chunk's own refusal fails too, and the sweep after the Map gives each line its notice
    faults = "BatchFunction:stepfunctions.StartExecution:always;BatchFunction:stepfunctions.DescribeExecution:times=25"
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults())
    with LocalPipeline(emulator_config=config, aws_faults=faults, aws_faults_seed=5, time_scale=0.02) as local:
        local.upload("incoming/s.batch/cat.jpg", jpeg_bytes(640, 400))
        local.upload("incoming/s.batch/s.batch.jsonl", jsonl({"image": "cat.jpg", "prompt": "a"}, {"image": "cat.jpg", "prompt": "b"}))
        [batch] = batch_notices(local, "incoming/s.batch/s.batch.jsonl", timeout=600)
        lines = line_notices(local, batch["batch_id"])
        [execution] = local.sfn.list_executions(stateMachineArn=local.stack.id("BatchStateMachine"))["executions"]
        history = local.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
    # as on AWS, the Map failed (a child failed past the tolerated 0), and the sweep after its wait ended the lines
    states = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert "LetChildrenFinish" in states and "SweepLines" in states and "CountLines" not in states
    assert any(e["type"] == "MapRunFailed" for e in history)
    assert sorted(r.notice["batch"]["line"] for r in lines) == [1, 2] and batch["failed_lines"] == [1, 2]
    assert all(r.notice["error"]["code"] == "INTERNAL" and "never became a job" in r.notice["error"]["message"] for r in lines)
    assert not local.emulator.submissions
