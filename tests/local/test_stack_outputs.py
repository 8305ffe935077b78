"""The CLI around a stack: a deployed one found in its CloudFormation outputs (a stubbed CloudFormation answers), the
jobs table read once per job, AWS problems told in one line, and what `local up` checks and says before it serves."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from img2video_local import commands
from img2video_local.cli import main
from img2video_local.commands import CommandError, Stack, jobs_in, parse_since
from img2video_local.up import describe

OUTPUTS = {
    "InputBucketName": "in-bucket",
    "InputPrefix": "incoming/",
    "OutputBucketName": "out-bucket",
    "JobsTableName": "jobs",
    "StateMachineArn": "arn:aws:states:eu-west-1:123456789012:stateMachine:jobs",
}


def _cloudformation(monkeypatch: pytest.MonkeyPatch, answers: list[dict[str, Any] | str]) -> None:
    """CloudFormation answering describe_stacks with these stacks' outputs (a string: that error code)."""
    client = boto3.client("cloudformation", region_name="eu-west-1")
    stubber = Stubber(client)
    for answer in answers:
        if isinstance(answer, str):
            stubber.add_client_error("describe_stacks", service_error_code=answer, service_message="Stack with id nowhere does not exist")
        else:
            stack = {
                "StackName": "img2video",
                "CreationTime": "2026-11-01T00:00:00Z",
                "StackStatus": "CREATE_COMPLETE",
                "Outputs": [{"OutputKey": key, "OutputValue": value} for key, value in answer.items()],
            }
            stubber.add_response("describe_stacks", {"Stacks": [stack]})
    stubber.activate()
    monkeypatch.setattr(boto3.session.Session, "client", lambda self, service, **kwargs: client)


def test_a_deployed_stack_is_found_by_name_in_the_users_region(monkeypatch: pytest.MonkeyPatch) -> None:
    _cloudformation(monkeypatch, [OUTPUTS])
    stack = Stack.deployed("img2video", region="eu-west-1")
    assert (stack.input_bucket, stack.output_bucket, stack.jobs_table, stack.region) == ("in-bucket", "out-bucket", "jobs", "eu-west-1")
    assert stack.endpoint_url is None  # AWS itself


def test_a_stack_that_is_not_img2video_or_missing_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _cloudformation(monkeypatch, [{"Something": "x"}, "ValidationError"])
    with pytest.raises(CommandError, match="has no output InputBucketName"):
        Stack.deployed("other", region="eu-west-1")
    with pytest.raises(CommandError, match="does not exist"):
        Stack.deployed("nowhere", region="eu-west-1")


def test_since_takes_durations_and_dates() -> None:
    assert parse_since("2026-11-24") == "2026-11-24T00:00:00.000Z"
    assert parse_since("2026-11-24T10:30:00+01:00") == "2026-11-24T09:30:00.000Z"
    assert parse_since(None) is None
    with pytest.raises(CommandError):
        parse_since("last tuesday")


def test_a_job_that_changes_state_between_the_per_state_queries_is_listed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`jobs` asks the by-state index once per state; a job that moved on in between is in two answers."""
    seen = {
        "running": [{"job_id": "cat-1", "state": "running", "updated_at": "2026-12-04T10:00:00.000Z"}],
        "succeeded": [
            {"job_id": "cat-1", "state": "succeeded", "updated_at": "2026-12-04T10:00:05.000Z"},
            {"job_id": "dog-1", "state": "succeeded", "updated_at": "2026-12-04T09:00:00.000Z"},
        ],
    }

    def query(stack: Stack, **arguments: Any) -> list[dict[str, Any]]:
        return seen.get(arguments["ExpressionAttributeValues"][":state"]["S"], [])

    monkeypatch.setattr(commands, "_query", query)
    stack = Stack("s", "eu-west-1", "in", "incoming/", "out", "jobs", "arn:aws:states:eu-west-1:1:stateMachine:s")
    listed = jobs_in(stack, ("running", "succeeded"))
    assert [(job["job_id"], job["state"]) for job in listed] == [("cat-1", "succeeded"), ("dog-1", "succeeded")]


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({}, "no AWS region: give --region REGION"),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, "no AWS credentials: run `aws configure`"),
    ],
)
def test_a_user_without_aws_set_up_gets_one_line_with_the_fix(
    environment: dict[str, str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was a 30-line traceback."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["--stack", "img2video", "jobs"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"img2video: error: {says}") and error.count("\n") == 1, error


def test_a_second_local_up_on_a_taken_port_exits_1_at_once_saying_why(capsys: pytest.CaptureFixture[str]) -> None:
    """It printed "Port 4599 is in use" and hung; nothing starts now when the port is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        answer: list[int] = []
        runner = threading.Thread(target=lambda: answer.append(main(["local", "up", "--port", str(port)])), daemon=True)
        runner.start()
        runner.join(timeout=60)
    assert answer == [1], "local up did not exit"
    error = capsys.readouterr().err
    assert f"port {port} is in use: is another `img2video local up` running?" in error and "--port" in error


def test_the_local_up_banner_shows_the_command_as_this_user_runs_it_and_the_aws_clis_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", [str(Path.cwd() / ".venv" / "bin" / "img2video"), "local", "up"])
    monkeypatch.setattr(shutil, "which", lambda name: None)  # not on PATH: a venv not activated
    stack = Stack("s", "us-east-1", "in", "incoming/", "out", "jobs", "arn:aws:states:us-east-1:1:stateMachine:s", "http://127.0.0.1:4599")
    banner = describe(stack, "arn:aws:sns:us-east-1:1:notices")
    assert "  .venv/bin/img2video local drop photo.jpg" in banner and "\n  img2video " not in banner
    assert "export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1" in banner


def test_local_up_stops_cleanly_on_kill_as_on_ctrl_c(tmp_path: Path) -> None:
    """Run in the background (no second terminal), `kill` is how it is stopped: its state file goes, it says so."""
    state = tmp_path / "local-stack.json"
    env = {**os.environ, "IMG2VIDEO_LOCAL_STATE": str(state)}
    command = [sys.executable, "-m", "img2video_local.cli", "local", "up", "--port", "0"]
    up = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not state.exists() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), "local up did not start"
        up.send_signal(signal.SIGTERM)
        _, errors = up.communicate(timeout=120)
    finally:
        up.kill()
    assert up.returncode == 0 and not state.exists() and "img2video local stack stopped." in errors
