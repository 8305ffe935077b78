"""Local mode builds the stack as CloudFormation would, and refuses what CloudFormation refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from img2video_local.cfn import StackRefused, check_environment, creation_order, dependencies, references
from img2video_local.stack import provision
from img2video_local.template import TEMPLATE_PATH, Template
from moto import mock_aws

from tests.conftest import API_KEY


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    """The template with the last occurrence of `old` replaced."""
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert old in text, old
    before, _, after = text.rpartition(old)
    path = tmp_path / "template.yaml"
    path.write_text(before + new + after, encoding="utf-8")
    return path


def test_the_translated_stack_has_no_cycle_and_each_resource_comes_after_what_it_names() -> None:
    # Given the SAM-translated template (66+ resources), as CloudFormation receives it
    resources = Template.load().translated["Resources"]
    order = creation_order(resources)
    assert sorted(order) == sorted(resources)
    position = {name: index for index, name in enumerate(order)}
    for name, needs in dependencies(resources).items():
        assert all(position[need] < position[name] for need in needs), name


def test_a_role_that_names_the_state_machine_invoking_its_function_is_the_cycle_cloudformation_refuses(tmp_path: Path) -> None:
    # The first `sam deploy` failed this way: Publish's role named ${VideoJobStateMachine.Name}, the state machine
    # invokes Publish's version, the version needs Publish, Publish needs its role.
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    head, _, publish_on = text.partition("Sid: ReadEndedExecutions")  # Publish's grant, not Submit's or Batch's
    named = publish_on.replace(":execution:img2video-jobs-${StackUuid}:*", ":execution:${VideoJobStateMachine.Name}-${StackUuid}:*", 1)
    assert named != publish_on
    path = tmp_path / "template.yaml"
    path.write_text(head + "Sid: ReadEndedExecutions" + named, encoding="utf-8")
    with mock_aws(), pytest.raises(StackRefused) as refused:
        provision(Template.load(path=path), API_KEY)
    message = str(refused.value)
    assert message.startswith("Circular dependency between resources: [")
    for resource in ("PublishFunction", "PublishFunctionRole", "VideoJobStateMachine"):
        assert resource in message


def test_a_cycle_through_depends_on_or_sub_is_refused_and_a_chain_is_ordered() -> None:
    chain = {
        "Queue": {"Type": "AWS::SQS::Queue"},
        "Policy": {"Type": "AWS::SQS::QueuePolicy", "Properties": {"Queues": [{"Ref": "Queue"}]}},
        "Bucket": {"Type": "AWS::S3::Bucket", "DependsOn": "Policy", "Properties": {"X": {"Fn::Sub": "${Queue.Arn}-${AWS::Region}"}}},
    }
    assert creation_order(chain) == ["Queue", "Policy", "Bucket"]
    looped: dict[str, Any] = {**chain, "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"Tags": [{"Value": {"Fn::Sub": "${Bucket}"}}]}}}
    with pytest.raises(StackRefused, match=r"^Circular dependency between resources: \[Bucket, Policy, Queue\]$"):
        creation_order(looped)
    itself = {"A": {"Type": "AWS::SNS::Topic", "Properties": {"Name": {"Fn::GetAtt": ["A", "TopicName"]}}}}
    with pytest.raises(StackRefused, match=r"\[A\]"):
        creation_order(itself)


def test_references_skip_sub_literals_pseudo_parameters_and_the_subs_own_variables() -> None:
    found = set(references({"Fn::Sub": ["${!Literal}${AWS::Region}${Mine}${Bucket.Arn}", {"Mine": {"Ref": "Table"}}]}))
    assert found == {"AWS::Region", "Bucket", "Table"}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"DefaultPrompt": "p" * 301}, "Parameter 'DefaultPrompt' must contain at most 300 characters"),
        ({"InputPrefix": "incoming"}, "Parameter 'InputPrefix' must match pattern"),
        ({"DefaultDuration": "16"}, "Parameter 'DefaultDuration' must be a number not greater than 15"),
        ({"DefaultDuration": "five"}, "Parameter 'DefaultDuration' must be a number"),
        ({"DefaultResolution": "4k"}, "Parameter 'DefaultResolution' must be one of AllowedValues"),
        ({"NotificationEmail": "not an address"}, "Parameter NotificationEmail failed to satisfy constraint"),
        ({"AlertEmail": "ops@example"}, "Parameter AlertEmail failed to satisfy constraint"),
        ({"NovitaBaseUrl": "http://api.novita.ai"}, "Parameter 'NovitaBaseUrl' must match pattern"),
    ],
)
def test_parameters_are_refused_as_cloudformation_refuses_them(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(StackRefused) as refused:
        Template.load(parameters)
    assert str(refused.value).startswith(message)


def test_good_parameters_pass() -> None:
    Template.load({"NotificationEmail": "me@example.com", "AlertEmail": "ops+img2video@example.co.uk", "DefaultPrompt": "p" * 300})


def test_an_environment_over_lambdas_4_kb_is_refused() -> None:
    check_environment("f", {"A": "x" * 4000})
    with pytest.raises(StackRefused, match="exceeded the 4KB limit"):
        check_environment("f", {"A": "x" * 4000, "B": "y" * 100})


def test_the_longest_default_prompt_the_stack_allows_still_fits_each_functions_environment() -> None:
    # every other parameter at its longest allowed value too
    # (4-byte characters), with room to spare for AWS's longer generated names (a stack name of up to 128 characters)
    longest = {"DefaultPrompt": "\U0001f30a" * 300, "InputPrefix": "a" * 99 + "/", "NovitaBaseUrl": "https://" + "n" * 92}
    with mock_aws():
        stack = provision(Template.load(longest), API_KEY)  # raises StackRefused if any function's environment is over 4 KB
    for logical, resource in stack.template.translated["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            variables = stack.template.resolve(resource["Properties"]["Environment"]["Variables"])
            assert len(json.dumps(variables, separators=(",", ":"), ensure_ascii=False).encode()) <= 4096 - 1000, logical


def test_a_reservation_in_the_template_limits_its_function_locally_as_lambda_does() -> None:
    specs = {spec.logical_id: spec for spec in Template.load({"WebhookReservedConcurrency": "5"}).functions()}
    assert specs["WebhookFunction"].reserved_concurrency == 5 and specs["StoreFunction"].reserved_concurrency is None
    assert {spec.reserved_concurrency for spec in Template.load().functions()} == {None}
