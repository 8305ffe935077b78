"""Local mode's IAM: AWS's evaluation logic, what each call asks for, and denials answered as AWS answers them."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from img2video_local import iam
from img2video_local.aws_faults import Invocation, enforce_iam, running, stop_enforcing_iam
from img2video_local.stack import provision
from img2video_local.template import REGION, Template
from moto import mock_aws

from tests.conftest import API_KEY


def statement(effect: str = "Allow", **fields: Any) -> iam.Statement:
    return iam.Statement.parse("Role/Policy0", 0, {"Effect": effect, **fields})


def policies(*statements: iam.Statement, attached: dict[str, list[iam.Statement]] | None = None) -> iam.Policies:
    return iam.Policies({"Fn": iam.Principal("stack-FnRole", "stack-Fn", list(statements))}, attached or {})


def allowed(p: iam.Policies, action: str, resource: str, **context: str) -> bool:
    return p.check("Fn", iam.Request(action, resource, context)).allowed


def test_nothing_is_allowed_unless_a_statement_allows_it() -> None:
    assert not allowed(policies(), "s3:GetObject", "arn:aws:s3:::b/k")
    p = policies(statement(Action="s3:GetObject", Resource="arn:aws:s3:::b/*"))
    assert allowed(p, "s3:GetObject", "arn:aws:s3:::b/a/k.jpg")
    assert not allowed(p, "s3:PutObject", "arn:aws:s3:::b/k")
    assert not allowed(p, "s3:GetObject", "arn:aws:s3:::other/k")
    assert not allowed(p, "s3:ListBucket", "arn:aws:s3:::b")  # the bucket is not b/*


def test_an_explicit_deny_wins_over_any_allow() -> None:
    p = policies(statement(Action="sqs:*", Resource="*"), statement("Deny", Action="sqs:DeleteMessage", Resource="arn:aws:sqs:*:*:q"))
    assert allowed(p, "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:q")
    decision = p.check("Fn", iam.Request("sqs:DeleteMessage", "arn:aws:sqs:us-east-1:1:q"))
    assert not decision.allowed and decision.explicit


def test_actions_match_without_case_and_resources_with_it() -> None:
    p = policies(statement(Action=["DynamoDB:get*"], Resource="arn:aws:dynamodb:us-east-1:1:table/Jobs"))
    assert allowed(p, "dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:1:table/Jobs")
    assert not allowed(p, "dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:1:table/jobs")
    assert not allowed(p, "dynamodb:Query", "arn:aws:dynamodb:us-east-1:1:table/Jobs/index/by-source")


def test_not_action_and_not_resource_allow_everything_else() -> None:
    p = policies(statement(NotAction="s3:DeleteObject", NotResource="arn:aws:s3:::secret/*"))
    assert allowed(p, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not allowed(p, "s3:DeleteObject", "arn:aws:s3:::b/k")
    assert not allowed(p, "s3:GetObject", "arn:aws:s3:::secret/k")


def test_conditions_hold_only_with_their_keys_unless_if_exists() -> None:
    via_sns = statement(
        Action="kms:GenerateDataKey", Resource="*", Condition={"StringEquals": {"kms:ViaService": "sns.us-east-1.amazonaws.com"}}
    )
    assert allowed(policies(via_sns), "kms:GenerateDataKey", "k", **{"kms:ViaService": "sns.us-east-1.amazonaws.com"})
    assert not allowed(policies(via_sns), "kms:GenerateDataKey", "k")
    prefix = statement(Action="s3:ListBucket", Resource="*", Condition={"StringLikeIfExists": {"s3:prefix": "videos/*"}})
    assert allowed(policies(prefix), "s3:ListBucket", "arn:aws:s3:::b")
    assert allowed(policies(prefix), "s3:ListBucket", "arn:aws:s3:::b", **{"s3:prefix": "videos/a"})
    assert not allowed(policies(prefix), "s3:ListBucket", "arn:aws:s3:::b", **{"s3:prefix": "incoming/"})


def test_a_resource_policys_deny_applies_to_the_role_and_its_allow_for_a_service_does_not() -> None:
    tls_only = iam.Statement.parse(
        "BucketPolicy",
        0,
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    )
    for_s3 = iam.Statement.parse(
        "QueuePolicy", 0, {"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "s3:*", "Resource": "*"}
    )
    p = policies(statement(Action="s3:GetObject", Resource="*"), attached={"arn:aws:s3:::b": [tls_only, for_s3]})
    assert allowed(p, "s3:GetObject", "arn:aws:s3:::b/k")  # over TLS, as boto3 calls
    assert not allowed(p, "s3:GetObject", "arn:aws:s3:::b/k", **{"aws:SecureTransport": "false"})
    assert not allowed(p, "s3:PutObject", "arn:aws:s3:::b/k")


def test_an_operator_local_mode_cannot_evaluate_is_refused_not_guessed() -> None:
    with pytest.raises(iam.PolicyError, match="DateGreaterThan"):
        statement(Action="s3:*", Resource="*", Condition={"DateGreaterThan": {"aws:CurrentTime": "2026-01-01"}})


@pytest.mark.parametrize(
    ("service", "operation", "params", "expected"),
    [
        ("s3", "HeadObject", {"Bucket": "b", "Key": "a/k"}, [("s3:GetObject", "arn:aws:s3:::b/a/k")]),
        ("s3", "UploadPart", {"Bucket": "b", "Key": "v.mp4"}, [("s3:PutObject", "arn:aws:s3:::b/v.mp4")]),
        ("s3", "ListObjectsV2", {"Bucket": "b", "Prefix": "in/"}, [("s3:ListBucket", "arn:aws:s3:::b")]),
        (
            "sqs",
            "DeleteMessageBatch",
            {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q"},
            [("sqs:DeleteMessage", "arn:aws:sqs:us-east-1:123456789012:q")],
        ),
        (
            "dynamodb",
            "Query",
            {"TableName": "t", "IndexName": "by-source"},
            [("dynamodb:Query", f"arn:aws:dynamodb:{REGION}:123456789012:table/t/index/by-source")],
        ),
        (
            "dynamodb",
            "TransactWriteItems",
            {"TransactItems": [{"Update": {"TableName": "t"}}, {"ConditionCheck": {"TableName": "u"}}]},
            [
                ("dynamodb:UpdateItem", f"arn:aws:dynamodb:{REGION}:123456789012:table/t"),
                ("dynamodb:ConditionCheckItem", f"arn:aws:dynamodb:{REGION}:123456789012:table/u"),
            ],
        ),
        (
            "lambda",
            "Invoke",
            {"FunctionName": "arn:aws:lambda:us-east-1:1:function:f:1"},
            [("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:1:function:f:1")],
        ),
        ("stepfunctions", "SendTaskSuccess", {"taskToken": "t"}, [("states:SendTaskSuccess", "arn:sm")]),
    ],
)
def test_each_call_asks_iam_for_what_the_service_asks(
    service: str, operation: str, params: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert [(r.action, r.resource) for r in iam.requests_for(service, operation, params, "arn:sm")] == expected


def test_a_call_local_mode_cannot_map_is_refused_not_allowed() -> None:
    with pytest.raises(iam.PolicyError, match=r"s3\.PutBucketPolicy"):
        iam.requests_for("s3", "PutBucketPolicy", {"Bucket": "b"})


@pytest.fixture
def stack() -> Any:
    with mock_aws():
        local = provision(Template.load(), API_KEY)
        enforce_iam(local.policies)
        try:
            yield local
        finally:
            stop_enforcing_iam(local.policies)


def as_function(function: str) -> Any:
    return running(Invocation(function, "req-1"))


def test_a_function_is_denied_what_its_role_does_not_grant_in_the_services_words(stack: Any) -> None:
    # Poll has no business with the input bucket
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=stack.id("InputBucket"), Key="incoming/cat.jpg", Body=b"x")
    with as_function("PollFunction"), pytest.raises(ClientError) as denied:
        s3.get_object(Bucket=stack.id("InputBucket"), Key="incoming/cat.jpg")
    error = denied.value.response["Error"]
    assert error["Code"] == "AccessDenied" and denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Message"] == (
        "User: arn:aws:sts::123456789012:assumed-role/img2video-local-PollFunctionRole/img2video-local-PollFunction is not "
        f"authorized to perform: s3:GetObject on resource: arn:aws:s3:::{stack.id('InputBucket')}/incoming/cat.jpg "
        "because no identity-based policy allows the s3:GetObject action"
    )
    sfn = boto3.client("stepfunctions", region_name=REGION)
    with as_function("StoreFunction"), pytest.raises(ClientError) as denied:
        sfn.start_execution(stateMachineArn=stack.id("VideoJobStateMachine"), name="x", input="{}")
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    with as_function("AcceptFunction"):  # Accept may
        sfn.start_execution(stateMachineArn=stack.id("VideoJobStateMachine"), name="x", input="{}")


def test_a_missing_key_is_403_without_list_bucket_and_404_with_it(stack: Any) -> None:
    # S3's HeadObject reference: without s3:ListBucket, a key that does not exist answers 403 (not 404)
    s3 = boto3.client("s3", region_name=REGION)
    with as_function("SubmitFunction"), pytest.raises(ClientError) as no_list:  # Submit may read images, not list them
        s3.head_object(Bucket=stack.id("InputBucket"), Key="incoming/gone.jpg")
    assert no_list.value.response["Error"]["Code"] == "403"
    with as_function("SubmitFunction"), pytest.raises(ClientError) as no_list_get:
        s3.get_object(Bucket=stack.id("InputBucket"), Key="incoming/gone.jpg")
    assert no_list_get.value.response["Error"]["Code"] == "AccessDenied"
    with as_function("StoreFunction"), pytest.raises(ClientError) as listed:  # Store may list the output bucket
        s3.head_object(Bucket=stack.id("OutputBucket"), Key="videos/not-yet.mp4")
    assert listed.value.response["Error"]["Code"] == "404"
    with as_function("PublishFunction"), pytest.raises(ClientError) as listed_get:
        s3.get_object(Bucket=stack.id("OutputBucket"), Key="videos/not-yet.json")
    assert listed_get.value.response["Error"]["Code"] == "NoSuchKey"


def test_calls_outside_any_function_are_the_users_and_not_checked(stack: Any) -> None:
    boto3.client("s3", region_name=REGION).put_object(Bucket=stack.id("OutputBucket"), Key="anything", Body=b"x")
    assert stack.policies.checked == 0


def test_grants_no_call_used_are_reported(stack: Any) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    with as_function("PollFunction"):
        sqs.send_message(QueueUrl=stack.id("SubmitQueue"), MessageBody="{}")
    unused = stack.policies.unused_grants()
    assert ("PollFunctionRole/PollFunctionRolePolicy0:WakeAJobWaitingForASlot", "sqs:sendmessage") not in unused
    assert ("PollFunctionRole/PollFunctionRolePolicy0:WakeAJobWaitingForASlot", "sqs:deletemessage") in unused


def test_eventbridge_may_invoke_the_backstop_only_through_the_permission_sam_made(stack: Any) -> None:
    resources = stack.template.translated["Resources"]
    target = f"{stack.arn('PublishFunction')}:live"
    rule = stack.arn("PublishFunctionBackstop")
    assert iam.service_may_invoke(resources, stack.template.resolve, "events.amazonaws.com", target, rule)
    assert not iam.service_may_invoke(resources, stack.template.resolve, "events.amazonaws.com", stack.arn("PublishFunction"), rule)
    assert not iam.service_may_invoke(resources, stack.template.resolve, "events.amazonaws.com", target, rule + "-other")
    without = {name: res for name, res in resources.items() if name != "PublishFunctionBackstopPermission"}
    assert not iam.service_may_invoke(without, stack.template.resolve, "events.amazonaws.com", target, rule)


def test_eventbridge_may_send_an_existing_buckets_uploads_only_to_a_queue_whose_policy_names_the_rule() -> None:
    with mock_aws():
        local = provision(Template.load({"ExistingInputBucket": "my-photos"}), API_KEY)
        queue, rule = local.arn("UploadQueue"), local.arn("ExistingBucketUploadsRule")
        assert local.policies.service_may("events.amazonaws.com", "sqs:SendMessage", queue, rule)
        assert not local.policies.service_may("events.amazonaws.com", "sqs:SendMessage", queue, rule + "-another")
        assert not local.policies.service_may("sns.amazonaws.com", "sqs:SendMessage", queue, rule)
        assert not local.policies.service_may("events.amazonaws.com", "sqs:SendMessage", local.arn("SubmitQueue"), rule)
