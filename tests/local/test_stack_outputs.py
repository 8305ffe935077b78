"""The CLI finds a deployed stack's resources in its CloudFormation outputs (a stubbed CloudFormation answers)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from img2video_local.commands import CommandError, Stack, parse_since

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
