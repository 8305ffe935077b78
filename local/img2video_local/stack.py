"""Creating the template's resources inside moto, so local mode runs against the same stack shape."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3

from img2video_local.template import ACCOUNT, REGION, REPO_ROOT, STACK_NAME, FunctionSpec, Template


@dataclass
class LocalStack:
    template: Template
    environment: dict[str, str]
    functions: dict[str, FunctionSpec]

    def id(self, logical_id: str) -> str:
        return self.template.physical_ids[logical_id]

    def arn(self, logical_id: str) -> str:
        return self.template.arns[logical_id]


def _generated(spec: dict[str, Any]) -> str:
    """A secret as Secrets Manager's GenerateSecretString makes it (the options the template uses)."""
    alphabet = string.ascii_letters + string.digits + ("" if spec.get("ExcludePunctuation") else string.punctuation)
    return "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))


def _client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def provision(template: Template, api_key: str, serve_url: Callable[[str], str] | None = None) -> LocalStack:
    """Create every resource local mode needs (inside an active moto mock) and resolve the functions' environment.

    `serve_url(function_logical_id)` puts a function behind a local Function URL and returns the URL.
    """
    ids, arns = template.physical_ids, template.arns

    for logical, res in template.of_type("AWS::SecretsManager::Secret").items():
        generate = res["Properties"].get("GenerateSecretString")
        # a generated secret (the webhook path) is made here as CloudFormation makes it; the other holds the API key
        value = _generated(generate) if generate else json.dumps({"api_key": api_key})
        answer = _client("secretsmanager").create_secret(Name=f"{STACK_NAME}-{logical}", SecretString=value)
        ids[logical] = arns[logical] = answer["ARN"]

    for logical, res in template.of_type("AWS::DynamoDB::Table").items():
        props = res["Properties"]
        name = f"{STACK_NAME}-{logical}"
        _client("dynamodb").create_table(
            TableName=name,
            BillingMode=props["BillingMode"],
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            **({"GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"]} if "GlobalSecondaryIndexes" in props else {}),
        )
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            _client("dynamodb").update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        ids[logical] = name
        arns[logical] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"

    queues = template.of_type("AWS::SQS::Queue")
    # dead-letter queues first: the others name them in their redrive policy
    for logical in sorted(queues, key=lambda name: "RedrivePolicy" in queues[name]["Properties"]):
        props = dict(queues[logical]["Properties"])
        attributes = {"VisibilityTimeout": str(props.get("VisibilityTimeout", 30))}
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(template.resolve(props["RedrivePolicy"]))
        url = _client("sqs").create_queue(QueueName=f"{STACK_NAME}-{logical}", Attributes=attributes)["QueueUrl"]
        ids[logical] = url
        arns[logical] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK_NAME}-{logical}"

    for logical in template.of_type("AWS::SNS::Topic"):
        arn = _client("sns").create_topic(Name=f"{STACK_NAME}-{logical}")["TopicArn"]
        ids[logical] = arns[logical] = arn

    s3 = _client("s3")
    for logical, res in template.of_type("AWS::S3::Bucket").items():
        props = res["Properties"]
        name = template.resolve(props["BucketName"]) if "BucketName" in props else f"{STACK_NAME}-{logical.lower()}"
        s3.create_bucket(Bucket=name)
        ids[logical] = name
        arns[logical] = f"arn:aws:s3:::{name}"
    for logical, res in template.of_type("AWS::S3::Bucket").items():
        notifications = res["Properties"].get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        if notifications:
            s3.put_bucket_notification_configuration(
                Bucket=ids[logical],
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {
                            "QueueArn": template.resolve(item["Queue"]),
                            "Events": [item["Event"]],
                            "Filter": {"Key": {"FilterRules": template.resolve(item["Filter"]["S3Key"]["Rules"])}},
                        }
                        for item in notifications
                    ]
                },
            )

    functions = {spec.logical_id: spec for spec in template.functions()}
    for spec in functions.values():
        ids[spec.logical_id] = spec.name
        arns[spec.logical_id] = spec.arn

    for logical, res in template.of_type("AWS::Lambda::Url").items():
        target = template.resolve(res["Properties"]["TargetFunctionArn"])
        (function,) = [spec.logical_id for spec in functions.values() if spec.arn == target]
        # without a server, the URL has AWS's shape and nothing behind it (tests that never call it)
        ids[logical] = serve_url(function) if serve_url else f"https://{logical.lower()}.lambda-url.{REGION}.on.aws/"
        arns[logical] = f"{functions[function].arn}:url"

    for logical, res in template.of_type("AWS::Serverless::StateMachine").items():
        props = res["Properties"]
        definition = (REPO_ROOT / props["DefinitionUri"]).read_text(encoding="utf-8")
        for name, value in template.resolve(props.get("DefinitionSubstitutions", {})).items():
            definition = definition.replace("${" + name + "}", str(value))
        arn = _client("stepfunctions").create_state_machine(
            name=f"{STACK_NAME}-{logical}",
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/{STACK_NAME}-{logical}Role",
            type=props.get("Type", "STANDARD"),
        )["stateMachineArn"]
        ids[logical] = arns[logical] = arn

    environment: dict[str, str] = {}
    for spec in functions.values():
        for key, value in spec.environment.items():
            resolved = str(template.resolve(value))
            if environment.get(key, resolved) != resolved:
                raise ValueError(f"functions disagree on {key}; local mode runs them in one process")
            environment[key] = resolved
    return LocalStack(template=template, environment=environment, functions=functions)
