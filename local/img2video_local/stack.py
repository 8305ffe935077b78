"""Creating the template's resources inside moto, as CloudFormation would: from the SAM-translated template, each
resource after those it references, so local mode runs against the same stack shape and refuses what AWS refuses."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3

from img2video_local import iam
from img2video_local.cfn import check_environment, creation_order
from img2video_local.template import ACCOUNT, PUBLISHED_VERSION, REGION, REPO_ROOT, STACK_NAME, FunctionSpec, Template


@dataclass
class LocalStack:
    template: Template
    environment: dict[str, str]
    functions: dict[str, FunctionSpec]
    policies: iam.Policies  # every role's statements: what each function and the state machine may call

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


class _Builder:
    """Creates one resource at a time, in CloudFormation's order; a resource not modelled locally gets its names only."""

    def __init__(self, template: Template, api_key: str, serve_url: Callable[[str], str] | None) -> None:
        self.template = template
        self.api_key = api_key
        self.serve_url = serve_url
        self.functions = {spec.logical_id: spec for spec in template.functions()}
        self.ids, self.arns, self.attributes = template.physical_ids, template.arns, template.attributes

    def create(self, logical: str, resource: dict[str, Any]) -> None:
        kind = resource["Type"]
        props = self.template.resolve(resource.get("Properties", {}))  # every reference is to a resource created before
        creator = getattr(self, "_" + kind.replace("AWS::", "").replace("::", "_").lower(), None)
        if creator is not None:
            creator(logical, props)
        else:
            self.ids[logical] = f"{STACK_NAME}-{logical}"
            self.arns[logical] = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:{kind}/{STACK_NAME}-{logical}"

    def _secretsmanager_secret(self, logical: str, props: dict[str, Any]) -> None:
        generate = props.get("GenerateSecretString")
        # a generated secret (the webhook path) is made here as CloudFormation makes it; the other holds the API key
        value = _generated(generate) if generate else json.dumps({"api_key": self.api_key})
        answer = _client("secretsmanager").create_secret(Name=f"{STACK_NAME}-{logical}", SecretString=value)
        self.ids[logical] = self.arns[logical] = answer["ARN"]

    def _dynamodb_table(self, logical: str, props: dict[str, Any]) -> None:
        name = f"{STACK_NAME}-{logical}"
        _client("dynamodb").create_table(
            TableName=name,
            BillingMode=props["BillingMode"],
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            **({"GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"]} if "GlobalSecondaryIndexes" in props else {}),
        )
        if props.get("TimeToLiveSpecification"):
            _client("dynamodb").update_time_to_live(TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"])
        self.ids[logical] = name
        self.arns[logical] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"

    def _sqs_queue(self, logical: str, props: dict[str, Any]) -> None:
        name = f"{STACK_NAME}-{logical}"
        attributes = {"VisibilityTimeout": str(props.get("VisibilityTimeout", 30))}
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        self.ids[logical] = _client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self.arns[logical] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        self.attributes[logical] = {"QueueName": name}

    def _sns_topic(self, logical: str, props: dict[str, Any]) -> None:
        self.ids[logical] = self.arns[logical] = _client("sns").create_topic(Name=f"{STACK_NAME}-{logical}")["TopicArn"]
        self.attributes[logical] = {"TopicName": f"{STACK_NAME}-{logical}"}

    def _s3_bucket(self, logical: str, props: dict[str, Any]) -> None:
        name = props.get("BucketName") or f"{STACK_NAME}-{logical.lower()}"
        s3 = _client("s3")
        s3.create_bucket(Bucket=name)
        self.ids[logical] = name
        self.arns[logical] = f"arn:aws:s3:::{name}"
        notifications = props.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        if notifications:
            s3.put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {
                            "QueueArn": item["Queue"],
                            "Events": [item["Event"]],
                            "Filter": {"Key": {"FilterRules": item["Filter"]["S3Key"]["Rules"]}},
                        }
                        for item in notifications
                    ]
                },
            )

    def _lambda_function(self, logical: str, props: dict[str, Any]) -> None:
        spec = self.functions[logical]
        check_environment(spec.name, props.get("Environment", {}).get("Variables", {}))
        self.ids[logical] = spec.name
        self.arns[logical] = spec.arn

    def _lambda_version(self, logical: str, props: dict[str, Any]) -> None:
        self.ids[logical] = self.arns[logical] = iam.function_arn(props["FunctionName"], PUBLISHED_VERSION)
        self.attributes[logical] = {"Version": PUBLISHED_VERSION}

    def _lambda_alias(self, logical: str, props: dict[str, Any]) -> None:
        self.ids[logical] = self.arns[logical] = iam.function_arn(props["FunctionName"], props["Name"])

    def _iam_role(self, logical: str, props: dict[str, Any]) -> None:
        self.ids[logical] = f"{STACK_NAME}-{logical}"
        self.arns[logical] = f"arn:aws:iam::{ACCOUNT}:role/{STACK_NAME}-{logical}"

    def _events_rule(self, logical: str, props: dict[str, Any]) -> None:
        self.ids[logical] = props.get("Name") or f"{STACK_NAME}-{logical}"
        self.arns[logical] = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{self.ids[logical]}"
        queues = [target for target in props.get("Targets", []) if str(target.get("Arn", "")).startswith("arn:aws:sqs:")]
        if queues and "EventPattern" in props:  # routed by EventBridge itself (an existing bucket's uploads)
            events = _client("events")
            events.put_rule(Name=self.ids[logical], EventPattern=json.dumps(props["EventPattern"]), State="ENABLED")
            events.put_targets(Rule=self.ids[logical], Targets=[{"Id": t["Id"], "Arn": t["Arn"]} for t in queues])

    def _lambda_layerversion(self, logical: str, props: dict[str, Any]) -> None:
        self.ids[logical] = self.arns[logical] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{props.get('LayerName', logical)}:1"

    def _logs_loggroup(self, logical: str, props: dict[str, Any]) -> None:
        self.ids[logical] = props.get("LogGroupName") or f"{STACK_NAME}-{logical}"
        self.arns[logical] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self.ids[logical]}:*"

    def _lambda_url(self, logical: str, props: dict[str, Any]) -> None:
        target = props["TargetFunctionArn"]
        (function,) = [spec.logical_id for spec in self.functions.values() if spec.arn == target]
        # without a server, the URL has AWS's shape and nothing behind it (tests that never call it)
        self.ids[logical] = self.serve_url(function) if self.serve_url else f"https://{logical.lower()}.lambda-url.{REGION}.on.aws/"
        self.arns[logical] = f"{self.functions[function].arn}:url"

    def _stepfunctions_statemachine(self, logical: str, props: dict[str, Any]) -> None:
        # the definition as `sam deploy` uploads it: the SAM resource's file, its substitutions made by CloudFormation
        definition = (REPO_ROOT / self.template.resources[logical]["Properties"]["DefinitionUri"]).read_text(encoding="utf-8")
        for name, value in props.get("DefinitionSubstitutions", {}).items():
            definition = definition.replace("${" + name + "}", str(value))
        name = props.get("StateMachineName") or f"{STACK_NAME}-{logical}"
        arn = _client("stepfunctions").create_state_machine(
            name=name, definition=definition, roleArn=props["RoleArn"], type=props.get("StateMachineType", "STANDARD")
        )["stateMachineArn"]
        self.ids[logical] = self.arns[logical] = arn
        self.attributes[logical] = {"Name": name}


def provision(template: Template, api_key: str, serve_url: Callable[[str], str] | None = None) -> LocalStack:
    """Create the stack's resources (inside an active moto mock) in CloudFormation's order, refusing a cycle, and
    resolve the functions' environment and roles.

    `serve_url(function_logical_id)` puts a function behind a local Function URL and returns the URL.
    """
    translated = template.translated
    order = creation_order(translated["Resources"])  # CloudFormation refuses a cycle, whatever the conditions
    builder = _Builder(template, api_key, serve_url)
    for logical in order:
        resource = translated["Resources"][logical]
        if "Condition" in resource and not template.condition(resource["Condition"]):
            continue
        builder.create(logical, resource)
    functions = builder.functions

    environment: dict[str, str] = {}
    for spec in functions.values():
        for key, value in spec.environment.items():
            resolved = str(template.resolve(value))
            if environment.get(key, resolved) != resolved:
                raise ValueError(f"functions disagree on {key}; local mode runs them in one process")
            environment[key] = resolved
    sessions = {logical: spec.name for logical, spec in functions.items()}
    sessions.update({logical: template.attributes[logical]["Name"] for logical in template.of_type("AWS::Serverless::StateMachine")})
    policies = iam.principals_from(translated["Resources"], template.resolve, sessions)
    return LocalStack(template=template, environment=environment, functions=functions, policies=policies)
