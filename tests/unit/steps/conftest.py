"""Fixtures the step tests share."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import responses
from img2video.aws import clients, video_transfer
from img2video.steps import submit as submit_module
from img2video_local.stack import provision
from img2video_local.template import REGION, Template
from moto import mock_aws

from tests.conftest import API_KEY, NOVITA, Aws
from tests.unit.steps.support import RESULT_URL, VIDEO, VIDEO_URL, Answers, result, store, store_state


@pytest.fixture
def answers(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Answers:
    return Answers(monkeypatch, aws)


@pytest.fixture
def own_retries_not_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttled job's own retry is due in a minute or more, not in 1-4 s: what the line does is then seen whatever
    this machine's speed (the retries became visible beside the woken job on a loaded machine)."""
    real = submit_module.backoff_seconds
    monkeypatch.setattr(submit_module, "backoff_seconds", lambda *args, **kwargs: max(60.0, real(*args, **kwargs)))


# The real state machine in moto: SubmitToNovita sends the message with a real task token.
@pytest.fixture
def aws_running(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """Like conftest's `aws`, but moto runs the state machine, so SubmitToNovita puts a real task token on the SubmitQueue."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        stack = provision(Template.load({"NovitaBaseUrl": NOVITA, "SidecarGraceSeconds": "60"}), API_KEY)
        for name, value in stack.environment.items():
            monkeypatch.setenv(name, value)
        # the first poll waits an hour: the execution stays in WaitForVideo, never calling a Lambda function moto does not have
        monkeypatch.setenv("POLL_MIN_SECONDS", "3600")
        monkeypatch.setenv("POLL_MAX_SECONDS", "3600")
        clients.reset()
        sqs = boto3.client("sqs", region_name=REGION)
        queue = sqs.create_queue(QueueName="test-notices")["QueueUrl"]
        yield Aws(stack, boto3.client("s3", region_name=REGION), sqs, boto3.client("stepfunctions", region_name=REGION), queue)


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]  # an address stays itself, as getaddrinfo answers
        except ValueError:
            return ["93.184.216.34"]

    monkeypatch.setattr(video_transfer, "_resolve", resolve)


@pytest.fixture
def stored_state(aws: Aws, public_dns: None) -> Iterator[dict[str, Any]]:
    """A job whose Store step finished: the state PublishNotice gets on the success path."""
    with responses.RequestsMock() as novita:
        novita.get(RESULT_URL, json=result("TASK_STATUS_SUCCEED"))
        novita.get(VIDEO_URL, body=VIDEO, headers={"Content-Length": str(len(VIDEO))})
        state = store_state(aws)
        state["stored"] = store(aws, state)
    yield state
