"""Every stack command of the CLI against the embedded stack, through its loopback endpoint, as against AWS."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from img2video_local.cli import main
from img2video_local.commands import LOCAL_STATE_ENV, Stack
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline
from img2video_local.up import serving

from tests.conftest import API_KEY, jpeg_bytes
from tests.integration.test_pipeline import FAST, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalPipeline, Stack]]:
    """What `img2video local up` runs: the embedded stack, served on loopback, its coordinates in the state file."""
    monkeypatch.setenv(LOCAL_STATE_ENV, str(tmp_path / "local-stack.json"))
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults())
    with LocalPipeline(emulator_config=config) as pipeline, serving(pipeline) as stack:
        stack.save(tmp_path / "local-stack.json")
        yield pipeline, stack


class _CommandsStdout(io.StringIO):
    """The command's stdout. The handlers run in this same process, on other threads, and print their metrics (EMF
    lines) to stdout as Lambda does; with `local up` they are another process, so they are not the command's output."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def write(self, text: str) -> int:
        return super().write(text) if threading.get_ident() == self._thread else len(text)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    """Run `img2video local ARGV --json`: the exit code and the JSON lines on stdout (nothing else may be there)."""
    capsys.readouterr()
    stdout = _CommandsStdout()
    with contextlib.redirect_stdout(stdout):
        code = main(["local", *argv, "--json"])
    return code, [json.loads(line) for line in stdout.getvalue().splitlines()]


def photo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(jpeg_bytes())
    return path


def test_drop_watch_status_jobs_and_fetch_a_video(
    up: tuple[LocalPipeline, Stack], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, stack = up
    image = photo(tmp_path, "beach.jpg")
    code, lines = cli(
        capsys, "drop", str(image), "--prompt", "waves roll in", "--resolution", "540p", "--duration", "2", "--wait", "--timeout", "60"
    )
    assert code == 0, lines
    assert [line["dropped"] for line in lines[:2]] == ["incoming/beach.json", "incoming/beach.jpg"]
    assert len(lines) == 3, lines
    job = lines[2]
    assert job["state"] == "succeeded" and job["attempt"] == 1 and job["video_key"] == "videos/beach.mp4"
    assert lines[1]["job_id"] == job["job_id"] and "job_id" not in lines[0]  # the image's line names its job at once
    assert "│" not in capsys.readouterr().err  # no live table squeezed into a pipe (it looked like a second `jobs`)
    sidecar = json.loads(pipeline.s3.get_object(Bucket=stack.input_bucket, Key="incoming/beach.json")["Body"].read())
    assert sidecar == {"prompt": "waves roll in", "resolution": "540p", "duration": 2}

    code, by_key = cli(capsys, "status", "incoming/beach.jpg")
    assert code == 0 and [found["job_id"] for found in by_key] == [job["job_id"]]
    code, listed = cli(capsys, "jobs", "--state", "succeeded", "--since", "1h")
    assert code == 0 and [found["job_id"] for found in listed] == [job["job_id"]]
    assert cli(capsys, "jobs", "--state", "failed")[1] == []
    table = _CommandsStdout()  # the table a user pipes to grep: on stdout, one row per job, ids whole
    with contextlib.redirect_stdout(table):
        assert main(["local", "jobs"]) == 0
    assert [row for row in table.getvalue().splitlines() if job["job_id"] in row and "succeeded" in row]

    code, [fetched] = cli(capsys, "fetch", job["job_id"], "--out", str(tmp_path / "out"))
    assert code == 0 and [Path(path).name for path in fetched["files"]] == ["beach.mp4", "beach.json"]
    assert Path(fetched["files"][0]).read_bytes()[4:8] == b"ftyp"  # an MP4
    assert fetched["url"].startswith(stack.endpoint_url or "") and "X-Amz-Signature=" in fetched["url"]


def test_drop_uploads_nothing_the_pipeline_would_refuse_and_names_every_problem(
    up: tuple[LocalPipeline, Stack], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, stack = up
    image = photo(tmp_path, "big.jpg")
    code, lines = cli(capsys, "drop", str(image), "--prompt", "p", "--resolution", "4k", "--duration", "12")
    refused = capsys.readouterr().err
    assert code == 2 and lines == [] and '"resolution"' in refused and '"duration"' in refused, refused
    (tmp_path / "big.json").write_text(json.dumps({"prompt": "the sidecar's own"}))
    code, lines = cli(capsys, "drop", str(image), "--prompt", "p")
    assert code == 2 and lines == [] and "--force" in capsys.readouterr().err  # --prompt is never silently ignored
    assert pipeline.s3.list_objects_v2(Bucket=stack.input_bucket).get("KeyCount", 0) == 0  # nothing was uploaded

    code, lines = cli(capsys, "drop", str(image), "--prompt", "p", "--force", "--wait", "--timeout", "60")
    assert code == 0 and [line["dropped"] for line in lines[:2]] == ["incoming/big.json", "incoming/big.jpg"]
    assert json.loads(pipeline.s3.get_object(Bucket=stack.input_bucket, Key="incoming/big.json")["Body"].read()) == {"prompt": "p"}


def test_retry_after_a_failure_is_a_new_attempt_and_retry_failed_skips_what_succeeded_since(
    up: tuple[LocalPipeline, Stack], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, _ = up
    pipeline.emulator.config.balance = 0
    images = [str(photo(tmp_path, name)) for name in ("a.jpg", "b.jpg")]
    code, lines = cli(capsys, "drop", *images, "--prompt", "p", "--wait", "--timeout", "60")
    assert code == 1 and {line["error_code"] for line in lines[4:]} == {"INSUFFICIENT_BALANCE"}
    first_a = next(line for line in lines[4:] if line["source_key"] == "incoming/a.jpg")
    pipeline.emulator.config.balance = 10  # topped up
    code, [retried] = cli(capsys, "retry", first_a["job_id"])
    assert code == 0 and {**retried, "job_id": None} == {"retried": "incoming/a.jpg", "previous_job_id": first_a["job_id"], "job_id": None}
    attempts = wait_until(lambda: [j for j in cli(capsys, "status", "incoming/a.jpg")[1] if j["state"] == "succeeded"], 60)
    assert attempts and attempts[0]["attempt"] == 2 and attempts[0]["job_id"] == retried["job_id"] != first_a["job_id"]
    code, again = cli(capsys, "retry", "--failed")
    assert code == 0 and [line["retried"] for line in again] == ["incoming/b.jpg"]  # a.jpg's latest attempt succeeded
    assert wait_until(lambda: [j for j in cli(capsys, "status", "incoming/b.jpg")[1] if j["state"] == "succeeded"], 60)
    assert len(pipeline.emulator.submissions) == 2  # one paid task per successful attempt, nothing for the refused ones


def test_cancel_ends_a_running_job_with_one_cancelled_notice(
    up: tuple[LocalPipeline, Stack], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job is stopped while it waits for its webhook (a callback task): AWS aborts the execution at once, whatever
    the state, and the backstop sends CANCELLED (moto used to let the wait time out into a Catch: INTERNAL)."""
    pipeline, _ = up
    pipeline.emulator.config.faults = Faults.parse("hang=1")
    cli(capsys, "drop", str(photo(tmp_path, "slow.jpg")), "--prompt", "p")
    [running] = wait_until(lambda: [j for j in cli(capsys, "status", "incoming/slow.jpg")[1] if j["state"] == "running"], 60)
    assert cli(capsys, "cancel", running["job_id"])[0] == 0
    code, [ended] = cli(capsys, "watch", running["job_id"], "--timeout", "60")
    assert code == 1 and ended["state"] == "cancelled" and ended["error_code"] == "CANCELLED"
    notices = pipeline.wait_for_notices({"incoming/slow.jpg"}, 120)
    assert [(r.notice["event"], r.notice["error"]["code"]) for r in notices] == [("video.failed", "CANCELLED")]
    assert cli(capsys, "cancel", running["job_id"])[0] == 1  # already ended: said so, nothing changes


def test_a_job_cancelled_while_held_by_the_daily_limit_is_never_paid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCAL_STATE_ENV, str(tmp_path / "local-stack.json"))
    monkeypatch.setenv("QUOTA_WINDOW_SECONDS", "3600")
    config = EmulatorConfig(api_key=API_KEY, **FAST, faults=Faults())
    with LocalPipeline(parameters={"MaxSubmissionsPerDay": "1"}, emulator_config=config) as pipeline, serving(pipeline) as stack:
        stack.save(tmp_path / "local-stack.json")
        cli(capsys, "drop", str(photo(tmp_path, "first.jpg")), "--prompt", "p", "--wait", "--timeout", "60")
        cli(capsys, "drop", str(photo(tmp_path, "second.jpg")), "--prompt", "p")
        [held] = wait_until(lambda: [j for j in cli(capsys, "status", "incoming/second.jpg")[1] if j["state"] == "held"], 60)
        assert cli(capsys, "cancel", held["job_id"])[0] == 0
        code, [ended] = cli(capsys, "watch", held["job_id"], "--timeout", "60")
        assert code == 1 and ended["state"] == "cancelled" and len(pipeline.emulator.submissions) == 1


def test_usage_errors_exit_2_and_unknown_jobs_exit_1(up: tuple[LocalPipeline, Stack], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "x"]) == 2  # a deployed stack's command needs --stack
    assert "needs --stack NAME" in capsys.readouterr().err
    assert cli(capsys, "jobs", "--since", "last tuesday")[0] == 2
    assert cli(capsys, "retry")[0] == 2
    assert cli(capsys, "status", "nobody-0000000000")[0] == 1
    assert cli(capsys, "fetch", "incoming/none.jpg")[0] == 1


def test_a_users_own_http_subscriber_gets_the_notice_from_the_local_stack(
    up: tuple[LocalPipeline, Stack], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, stack = up
    received: list[dict[str, Any]] = []

    class Subscriber(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Subscriber)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/notices"
        stack.client("sns").subscribe(TopicArn=pipeline.stack.id("NoticesTopic"), Protocol="http", Endpoint=endpoint)
        cli(capsys, "drop", str(photo(tmp_path, "sub.jpg")), "--prompt", "p", "--wait", "--timeout", "60")
        notices = wait_until(lambda: [json.loads(m["Message"]) for m in received if m.get("Type") == "Notification"], 120)
        assert [(n["event"], n["source"]["key"]) for n in notices] == [("video.succeeded", "incoming/sub.jpg")]
    finally:
        server.shutdown()


def test_drop_with_a_model_checks_that_models_rules_first_and_the_job_carries_the_model(
    up: tuple[LocalPipeline, Stack], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, stack = up
    small, image = tmp_path / "small.jpg", tmp_path / "wide.jpg"
    small.write_bytes(jpeg_bytes(200, 160))  # fine for the default model, under Kling's 300 pixels
    image.write_bytes(jpeg_bytes(640, 400))
    code, lines = cli(capsys, "drop", str(small), "--prompt", "p", "--model", "kling-2.5-turbo-i2v")
    refused = capsys.readouterr().err
    assert code == 2 and lines == [] and "smaller than 300 pixels on a side; kling-2.5-turbo-i2v takes images" in refused, refused
    code, lines = cli(capsys, "drop", str(image), "--prompt", "p", "--model", "kling")
    assert code == 2 and 'did you mean "kling-2.5-turbo-i2v" or "kling-v2.1-i2v"?' in capsys.readouterr().err
    assert pipeline.s3.list_objects_v2(Bucket=stack.input_bucket).get("KeyCount", 0) == 0

    code, lines = cli(capsys, "drop", str(image), "--prompt", "p", "--model", "kling-2.5-turbo-i2v", "--wait", "--timeout", "120")
    assert code == 0, lines
    [job] = cli(capsys, "status", "incoming/wide.jpg")[1]
    assert job["state"] == "succeeded" and job["model"] == "kling-2.5-turbo-i2v"
    assert [s["model"] for s in pipeline.emulator.submissions] == ["kling-2.5-turbo-i2v"]


def test_a_users_rule_on_the_local_stacks_bus_gets_the_job_events_in_their_own_queue(
    up: tuple[LocalPipeline, Stack], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/reference/events.md: with `local up`, a rule and a queue made through its endpoint get every job's events."""
    _, stack = up
    sqs, events = stack.client("sqs"), stack.client("events")
    queue = sqs.create_queue(QueueName="my-videos")["QueueUrl"]
    events.put_rule(Name="videos", EventPattern=json.dumps({"source": ["img2video"]}))
    events.put_targets(Rule="videos", Targets=[{"Id": "q", "Arn": "arn:aws:sqs:us-east-1:123456789012:my-videos"}])
    code, _ = cli(capsys, "drop", str(photo(tmp_path, "tide.jpg")), "--prompt", "p", "--wait", "--timeout", "120")
    assert code == 0
    states: list[str] = []

    def read() -> list[str]:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            states.append(json.loads(message["Body"])["detail"]["state"])
        return [state for state in states if state == "succeeded"]

    assert wait_until(read, 60), states
    assert "accepted" in states and states.count("succeeded") == 1


def test_connect_bucket_turns_eventbridge_on_and_names_what_it_kept(
    up: tuple[LocalPipeline, Stack], capsys: pytest.CaptureFixture[str]
) -> None:
    _, stack = up
    s3, sqs = stack.client("s3"), stack.client("sqs")
    s3.create_bucket(Bucket="their-photos")
    sqs.create_queue(QueueName="their-queue")
    queue = "arn:aws:sqs:us-east-1:123456789012:their-queue"
    function = "arn:aws:lambda:us-east-1:123456789012:function:their-cleanup"
    s3.put_bucket_notification_configuration(
        Bucket="their-photos",
        NotificationConfiguration={
            "QueueConfigurations": [{"Id": "keep-me", "QueueArn": queue, "Events": ["s3:ObjectCreated:*"]}],
            "LambdaFunctionConfigurations": [{"Id": "and-me", "LambdaFunctionArn": function, "Events": ["s3:ObjectRemoved:*"]}],
        },
    )
    code, [done] = cli(capsys, "connect-bucket", "their-photos")
    assert code == 0 and done["eventbridge"] == "turned on"
    assert done["kept"] == [f"queue keep-me -> {queue} (s3:ObjectCreated:*)", f"Lambda and-me -> {function} (s3:ObjectRemoved:*)"]
    configuration = s3.get_bucket_notification_configuration(Bucket="their-photos")
    assert "EventBridgeConfiguration" in configuration and [c["Id"] for c in configuration["QueueConfigurations"]] == ["keep-me"]
    assert [c["Id"] for c in configuration["LambdaFunctionConfigurations"]] == ["and-me"]


def test_batch_status_shows_a_manifests_lines_by_outcome_until_its_batch_completes(
    up: tuple[LocalPipeline, Stack], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, _ = up
    pipeline.upload("incoming/set.batch/cat.jpg", jpeg_bytes())
    lines = [{"image": "cat.jpg", "prompt": "a cat"}, {"image": "cat.jpg", "prompt": "a cat", "duration": 99}]
    pipeline.upload("incoming/set.batch/set.batch.jsonl", "\n".join(json.dumps(line) for line in lines).encode())
    assert cli(capsys, "batch", "status", "missing.batch.jsonl")[0] == 1  # no such batch: said, exit 1

    def completed() -> list[dict[str, Any]]:
        code, [status] = cli(capsys, "batch", "status", "set.batch/set.batch.jsonl")
        return [{**status, "code": code}] if status["completed_at"] else []

    [status] = wait_until(completed, 120)
    assert status["manifest"] == "incoming/set.batch/set.batch.jsonl" and status["attempt"] == 1
    assert status["lines"] == 2 and status["ended"] == 2 and status["counts"] == {"succeeded": 1, "failed": 1, "cancelled": 0}
    assert status["failed_lines"] == [2] and status["code"] == 1  # a failed line: exit 1, as `status` of a failed job
    text_code = main(["local", "batch", "status", f"s3://{pipeline.input_bucket}/incoming/set.batch/set.batch.jsonl"])
    assert text_code == 1 and "2 of 2 lines ended: 1 succeeded, 1 failed, 0 cancelled" in capsys.readouterr().out


def test_retry_of_a_batch_line_says_how_to_retry_it_instead_of_copying_its_image(
    up: tuple[LocalPipeline, Stack], capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline, _ = up
    pipeline.upload("incoming/r.batch/cat.jpg", jpeg_bytes())
    pipeline.upload("incoming/r.batch/r.batch.jsonl", json.dumps({"image": "cat.jpg", "prompt": "a cat", "duration": 99}).encode())
    [failed] = wait_until(lambda: [r.notice for r in list(pipeline.notices) if r.notice.get("batch")], 120)
    assert main(["local", "retry", failed["job_id"]]) == 1
    assert "is line 1 of a batch manifest: upload the manifest again" in capsys.readouterr().err
    code, retried = cli(capsys, "retry", "--failed")
    assert code == 0 and retried == []  # nothing copied: the line is skipped, with the reason on stderr
