"""IAM as local mode enforces it: each function's AWS calls are allowed only as its role in the SAM-translated
template allows them, and a denied call is answered as the service answers it on AWS.

The evaluation follows AWS's documented logic for a principal and resources in one account: an explicit Deny in any
policy (identity or resource) wins; otherwise an Allow in either grants; otherwise the call is implicitly denied.
Statements match on Action/NotAction (case-insensitive, * and ? wildcards), Resource/NotResource (case-sensitive
wildcards), and the condition operators this stack's policies use; an operator local mode does not know is refused
when the stack is built, never treated as a match. Beyond IAM, S3's rule for a missing key: without s3:ListBucket on
the bucket, GetObject and HeadObject of a key that does not exist answer 403, not 404.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, cast
from urllib.parse import urlsplit

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from img2video_local.template import ACCOUNT, REGION

# AWS managed policies the SAM transform attaches by ARN, with the statements that matter here (their documents
# as AWS publishes them; logs and X-Ray calls are the runtime's, never the handlers').
MANAGED_POLICIES: dict[str, list[dict[str, Any]]] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}
    ],
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": [
        {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"},
    ],
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": [
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
                "xray:GetSamplingStatisticSummaries",
            ],
            "Resource": "*",
        }
    ],
}

# The error each service answers a denied call with: (code, HTTP status).
DENIED: dict[str, tuple[str, int]] = {
    "s3": ("AccessDenied", 403),
    "sqs": ("AccessDenied", 403),
    "sns": ("AuthorizationError", 403),
    "dynamodb": ("AccessDeniedException", 400),
    "stepfunctions": ("AccessDeniedException", 400),
    "secretsmanager": ("AccessDeniedException", 400),
    "lambda": ("AccessDeniedException", 403),
    "kms": ("AccessDeniedException", 400),
    "events": ("AccessDeniedException", 400),
}
CONDITION_OPERATORS = {
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Bool",
    "Null",
}


STATE_MACHINE = "<the state machine>"  # who acts when moto's interpreter makes a state machine's service calls


class PolicyError(ValueError):
    """A policy local mode cannot evaluate faithfully (refused when the stack is built, never guessed at)."""


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Statement:
    policy: str  # where it comes from: "AcceptFunctionRole/AcceptFunctionRolePolicy0", "InputBucketPolicy"
    sid: str
    effect: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()  # a resource policy's Principal ("*", service or account ARNs); empty for identity policies
    condition: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (operator, key, values)

    @classmethod
    def parse(cls, policy: str, index: int, data: dict[str, Any]) -> Statement:
        condition = []
        for operator, entries in data.get("Condition", {}).items():
            base = operator.removesuffix("IfExists")
            if base not in CONDITION_OPERATORS or ":" in base:
                raise PolicyError(f"{policy}: local mode does not evaluate the condition operator {operator}")
            for key, values in entries.items():
                condition.append((operator, key, tuple(str(v).lower() if base == "Bool" else str(v) for v in _as_list(values))))
        principal = data.get("Principal")
        principals: tuple[str, ...] = ()
        if principal is not None:
            principals = ("*",) if principal == "*" else tuple(str(p) for values in principal.values() for p in _as_list(values))
        return cls(
            policy=policy,
            sid=str(data.get("Sid", f"#{index}")),
            effect=data["Effect"],
            actions=tuple(_as_list(data.get("Action", []))),
            not_actions=tuple(_as_list(data.get("NotAction", []))),
            resources=tuple(_as_list(data.get("Resource", []))),
            not_resources=tuple(_as_list(data.get("NotResource", []))),
            principals=principals,
            condition=tuple(condition),
        )

    @property
    def name(self) -> str:
        return f"{self.policy}:{self.sid}"

    def matches(self, action: str, resource: str, context: dict[str, str], principal: Principal | None = None) -> bool:
        if self.actions and not any(fnmatchcase(action.lower(), pattern.lower()) for pattern in self.actions):
            return False
        if self.not_actions and any(fnmatchcase(action.lower(), pattern.lower()) for pattern in self.not_actions):
            return False
        if self.resources and not any(fnmatchcase(resource, pattern) for pattern in self.resources):
            return False
        if self.not_resources and any(fnmatchcase(resource, pattern) for pattern in self.not_resources):
            return False
        if self.principals and principal is not None and not principal.named_by(self.principals):
            return False
        return all(_condition_holds(operator, key, values, context) for operator, key, values in self.condition)


def _condition_holds(operator: str, key: str, values: tuple[str, ...], context: dict[str, str]) -> bool:
    base = operator.removesuffix("IfExists")
    present = key in context
    if base == "Null":
        return (not present) == (values[0].lower() == "true")
    if not present:
        # a missing key fails every operator but the negated ones... except with IfExists, which then holds
        return operator.endswith("IfExists")
    actual = context[key]
    if base in ("StringEquals", "ArnEquals"):
        return actual in values
    if base == "StringEqualsIgnoreCase":
        return actual.lower() in (v.lower() for v in values)
    if base in ("StringLike", "ArnLike"):
        return any(fnmatchcase(actual, v) for v in values)
    if base in ("StringNotEquals", "ArnNotEquals"):
        return actual not in values
    if base in ("StringNotLike", "ArnNotLike"):
        return not any(fnmatchcase(actual, v) for v in values)
    if base == "Bool":
        return actual.lower() in values
    raise PolicyError(f"local mode does not evaluate the condition operator {operator}")


@dataclass
class Principal:
    """A role: the function's or the state machine's, with every statement of its inline and managed policies."""

    role: str  # the role's name, as CloudFormation made it
    session: str  # the session name AWS shows in a denial (the function's name, or the execution's)
    statements: list[Statement]

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{ACCOUNT}:role/{self.role}"

    @property
    def caller(self) -> str:
        return f"arn:aws:sts::{ACCOUNT}:assumed-role/{self.role}/{self.session}"

    def named_by(self, principals: tuple[str, ...]) -> bool:
        own = {"*", self.role_arn, self.caller, ACCOUNT, f"arn:aws:iam::{ACCOUNT}:root"}
        return any(p in own for p in principals)


@dataclass(frozen=True)
class _ServicePrincipal:
    """An AWS service acting on a resource (EventBridge delivering to a queue): named by its service principal."""

    service: str

    def named_by(self, principals: tuple[str, ...]) -> bool:
        return "*" in principals or self.service in principals


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    by: Statement | None = None  # the statement that allowed or explicitly denied
    explicit: bool = False


class Policies:
    """Every principal's statements and every resource policy, evaluated as AWS evaluates them."""

    def __init__(
        self,
        principals: dict[str, Principal],
        resource_policies: dict[str, list[Statement]],
        state_machine: str | None = None,
        state_machine_arn: str = "",
        state_machine_roles: dict[str, str] | None = None,
    ) -> None:
        self.principals = principals  # by the logical id of the function or state machine acting
        self.resource_policies = resource_policies  # by the ARN of the bucket or queue it is attached to
        self.state_machine = state_machine  # the logical id of the state machine whose role its service calls use
        self.state_machine_arn = state_machine_arn  # a task token's resource
        self.state_machine_roles = state_machine_roles or {}  # each state machine's logical id, by its role's ARN
        self.checked = 0
        self.used: Counter[tuple[str, str]] = Counter()  # (statement name, action granted)
        self.denials: list[tuple[str, str, str]] = []  # (principal, action, resource)
        self._lock = threading.Lock()
        ENFORCED.append(self)

    def state_machine_of(self, role_arn: str) -> str:
        """The state machine whose role made a call (the jobs' when moto did not say)."""
        return self.state_machine_roles.get(role_arn) or self.state_machine or STATE_MACHINE

    def decide(self, principal: Principal, request: Request) -> Decision:
        context = {
            "aws:SecureTransport": "true",
            "aws:PrincipalArn": principal.role_arn,
            "aws:PrincipalAccount": ACCOUNT,
            **request.context,
        }
        attached = self._resource_statements(request.resource)
        allow: Statement | None = None
        for statement in [*principal.statements, *attached]:
            if not statement.matches(request.action, request.resource, context, principal):
                continue
            if statement.effect == "Deny":
                return Decision(False, statement, explicit=True)
            allow = allow or statement
        return Decision(allow is not None, allow)

    def check(self, acting: str, request: Request) -> Decision:
        principal = self.principals[acting]
        decision = self.decide(principal, request)
        with self._lock:
            self.checked += 1
            if decision.allowed and decision.by is not None:
                self.used[(decision.by.name, request.action.lower())] += 1
            elif not decision.allowed:
                self.denials.append((acting, request.action, request.resource))
        return decision

    def service_may(self, service: str, action: str, resource: str, source_arn: str) -> bool:
        """Whether the resource's policy lets an AWS service (events.amazonaws.com) act on it for `source_arn` (a
        rule): a service has no identity policy here, so only the resource policy can allow it, and its Deny wins."""
        context = {"aws:SecureTransport": "true", "aws:SourceArn": source_arn, "aws:SourceAccount": ACCOUNT}
        allowed = False
        for statement in self._resource_statements(resource):
            if statement.principals and statement.matches(action, resource, context, cast(Principal, _ServicePrincipal(service))):
                if statement.effect == "Deny":
                    return False
                allowed = True
        return allowed

    def _resource_statements(self, resource: str) -> list[Statement]:
        statements: list[Statement] = []
        for arn, attached in self.resource_policies.items():
            if resource == arn or resource.startswith(arn + "/"):
                statements.extend(attached)
        return statements

    def grants(self) -> Iterator[tuple[str, str]]:
        """Every (statement, action) an identity policy of the stack grants, for the unused-grant report."""
        for principal in self.principals.values():
            for statement in principal.statements:
                if statement.effect == "Allow" and not statement.policy.startswith("arn:aws:iam::aws:policy/"):
                    for action in statement.actions:
                        yield statement.name, action.lower()

    def unused_grants(self) -> list[tuple[str, str]]:
        return report([summary([self])])[2]


ENFORCED: list[Policies] = []  # every stack's policies in this process: the suite reports what none of its calls used


def summary(everything: list[Policies]) -> dict[str, Any]:
    """What a run of enforced stacks saw, as JSON: calls checked and denied, grants used and grants given (a test
    worker hands this to the session that reports, when the suite runs in several processes)."""
    return {
        "checked": sum(p.checked for p in everything),
        "denied": sum(len(p.denials) for p in everything),
        "used": sorted({grant for policies in everything for grant in policies.used}),
        "granted": sorted({grant for policies in everything for grant in policies.grants()}),
    }


def report(summaries: list[dict[str, Any]]) -> tuple[int, int, list[tuple[str, str]]]:
    """Across runs: calls checked, calls denied, and grants no call used (least privilege)."""
    used = {tuple(grant) for part in summaries for grant in part["used"]}
    granted = {tuple(grant) for part in summaries for grant in part["granted"]}
    unused = sorted(grant for grant in granted if not any(grant[0] == u[0] and fnmatchcase(u[1], grant[1]) for u in used))
    return sum(part["checked"] for part in summaries), sum(part["denied"] for part in summaries), unused


def denial_message(principal: Principal, request: Request, decision: Decision) -> str:
    because = (
        f"with an explicit deny in a{' resource-based' if decision.by and decision.by.principals else 'n identity-based'} policy"
        if decision.explicit
        else f"because no identity-based policy allows the {request.action} action"
    )
    return f"User: {principal.caller} is not authorized to perform: {request.action} on resource: {request.resource} {because}"


def denied_error(client: BaseClient, service: str, operation: str, message: str, head: bool = False) -> ClientError:
    code, status = DENIED.get(service, ("AccessDeniedException", 400))
    if head:  # a HEAD answer has no body: botocore reports the bare status
        code, message, status = "403", "Forbidden", 403
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    error_class: type[ClientError] = client.exceptions.from_code(code) if code != "403" else ClientError
    return error_class(response, operation)


# -- what a call asks IAM for ------------------------------------------------------------------------------------


def _queue_arn(url: str) -> str:
    parts = urlsplit(url).path.strip("/").split("/")
    return f"arn:aws:sqs:{REGION}:{parts[-2] if len(parts) > 1 else ACCOUNT}:{parts[-1]}"


def _table_arn(name: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


def function_arn(name: str, qualifier: str | None = None) -> str:
    """A function's ARN from its name or ARN, qualified when a qualifier is given and the ARN has none."""
    arn = name if name.startswith("arn:") else f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier and arn.count(":") == 6 else arn


def _secret_arn(secret_id: str) -> str:
    return secret_id if secret_id.startswith("arn:") else f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}"


_S3_ACTIONS = {
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "GetObjectTagging": "s3:GetObjectTagging",
    "PutObjectTagging": "s3:PutObjectTagging",
    "DeleteObject": "s3:DeleteObject",
}
_S3_BUCKET_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "PutBucketNotificationConfiguration": "s3:PutBucketNotification",
}
_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}


def _s3(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    bucket = params.get("Bucket", "")
    if operation in _S3_ACTIONS:
        return [Request(_S3_ACTIONS[operation], f"arn:aws:s3:::{bucket}/{params.get('Key', '')}")]
    if operation in _S3_BUCKET_ACTIONS:
        context = {"s3:prefix": params["Prefix"]} if "Prefix" in params else {}
        return [Request(_S3_BUCKET_ACTIONS[operation], f"arn:aws:s3:::{bucket}", context)]
    if operation == "CopyObject":
        source = params["CopySource"]
        source_arn = f"arn:aws:s3:::{source['Bucket']}/{source['Key']}" if isinstance(source, dict) else f"arn:aws:s3:::{source}"
        return [Request("s3:GetObject", source_arn), Request("s3:PutObject", f"arn:aws:s3:::{bucket}/{params['Key']}")]
    return None


def _sqs(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    if "QueueUrl" in params:
        return [Request(f"sqs:{_SQS_BATCH.get(operation, operation)}", _queue_arn(params["QueueUrl"]))]
    return None


def _dynamodb(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    if operation in ("TransactWriteItems", "TransactGetItems"):
        found = []
        for item in params.get("TransactItems", []):
            ((kind, body),) = item.items()
            action = "GetItem" if kind == "Get" else _TRANSACT_ACTIONS[kind]
            found.append(Request(f"dynamodb:{action}", _table_arn(body["TableName"])))
        return found
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [Request(f"dynamodb:{operation}", _table_arn(table)) for table in params.get("RequestItems", {})]
    if "TableName" in params:
        table = _table_arn(params["TableName"])
        return [Request(f"dynamodb:{operation}", f"{table}/index/{params['IndexName']}" if "IndexName" in params else table)]
    return None


def _stepfunctions(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    """A task token belongs to an execution of one state machine (`state_machine_arn`): that is what SendTask* names."""
    resource = params.get("stateMachineArn") or params.get("executionArn") or (state_machine_arn if "taskToken" in params else None)
    return [Request(f"states:{operation}", resource)] if resource else None


def _sns(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    topic = params.get("TopicArn") or params.get("TargetArn")
    return [Request(f"sns:{operation}", topic)] if topic else None


def _secretsmanager(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    return [Request(f"secretsmanager:{operation}", _secret_arn(params["SecretId"]))] if "SecretId" in params else None


def _lambda(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    if operation == "Invoke":
        return [Request("lambda:InvokeFunction", function_arn(params["FunctionName"], params.get("Qualifier")))]
    return None


def _events(operation: str, params: dict[str, Any], state_machine_arn: str) -> list[Request] | None:
    if operation == "PutEvents":
        # an entry names its bus by name or ARN (default: the account's default bus); IAM asks on the bus's ARN
        buses = [entry.get("EventBusName") or "default" for entry in params.get("Entries", [])]
        return [
            Request("events:PutEvents", bus if bus.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}")
            for bus in buses
        ]
    return None


_BY_SERVICE: dict[str, Callable[[str, dict[str, Any], str], list[Request] | None]] = {
    "s3": _s3,
    "sqs": _sqs,
    "dynamodb": _dynamodb,
    "stepfunctions": _stepfunctions,
    "sns": _sns,
    "secretsmanager": _secretsmanager,
    "lambda": _lambda,
    "events": _events,
}


def requests_for(service: str, operation: str, params: dict[str, Any], state_machine_arn: str = "") -> list[Request]:
    """The IAM authorizations a call needs, as the service asks for them (an action on a resource, with context).

    A task token belongs to an execution of one state machine (`state_machine_arn`): that is what SendTask* names."""
    found = _BY_SERVICE[service](operation, params, state_machine_arn) if service in _BY_SERVICE else None
    if found is None:
        raise PolicyError(f"local mode does not know what IAM asks for {service}.{operation}; add it to iam.requests_for")
    return found


# -- who is acting in this thread -------------------------------------------------------------------------------

_acting = threading.local()


def acting() -> str | None:
    """The logical id of the function or state machine whose role this thread's calls use, if set explicitly."""
    name: str | None = getattr(_acting, "name", None)
    return name


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    """Run this thread's AWS calls under `name`'s role (an event source mapping polls with its function's role)."""
    previous = acting()
    _acting.name = name
    try:
        yield
    finally:
        _acting.name = previous


# -- what a service may invoke: Lambda's resource-based permissions ---------------------------------------------------


def service_may_invoke(
    resources: dict[str, dict[str, Any]], resolve: Callable[[Any], Any], service: str, target: str, source_arn: str
) -> bool:
    """Whether the stack's AWS::Lambda::Permission resources let `service` (events.amazonaws.com, ...) invoke
    `target` (a function's ARN, qualified as the rule names it) for `source_arn` (the rule). Without one, EventBridge's call to
    the function is refused and the event never reaches it."""
    for resource in resources.values():
        if resource["Type"] != "AWS::Lambda::Permission":
            continue
        try:
            props = resolve(resource.get("Properties", {}))
        except KeyError:  # a permission the stack does not create (a false Condition)
            continue
        if props.get("Principal") != service or props.get("Action") not in ("lambda:InvokeFunction", "lambda:*"):
            continue
        if "SourceArn" in props and not fnmatchcase(source_arn, str(props["SourceArn"])):
            continue
        if function_arn(str(props["FunctionName"])) == target:
            return True
    return False


# -- building the principals from the translated template --------------------------------------------------------


def principals_from(resources: dict[str, dict[str, Any]], resolve: Callable[[Any], Any], session_names: dict[str, str]) -> Policies:
    """Each function's and state machine's role, and the resource policies, resolved from the translated template."""
    principals: dict[str, Principal] = {}
    machines: list[str] = []
    for logical, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            role_ref = props["Role"]
        elif resource["Type"] == "AWS::StepFunctions::StateMachine":
            role_ref = props["RoleArn"]
            machines.append(logical)
        else:
            continue
        if logical not in session_names:  # a resource the stack does not create (its Condition is false)
            continue
        ((_, target),) = role_ref.items()
        role = target[0] if isinstance(target, list) else str(target).split(".", 1)[0]
        statements = _role_statements(role, resources[role]["Properties"], resolve)
        principals[logical] = Principal(str(resolve({"Ref": role})), session_names[logical], statements)
    resource_policies: dict[str, list[Statement]] = {}
    for logical, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] not in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"):
            continue
        try:
            if resource["Type"] == "AWS::S3::BucketPolicy":
                targets = [f"arn:aws:s3:::{resolve(props['Bucket'])}"]
            else:
                targets = [_queue_arn(str(resolve(url))) for url in props["Queues"]]
            document = resolve(props["PolicyDocument"])
        except KeyError:  # its resource does not exist (a false Condition)
            continue
        statements = [Statement.parse(logical, i, s) for i, s in enumerate(_as_list(document["Statement"]))]
        for target in targets:
            resource_policies.setdefault(target, []).extend(statements)
    machines = [logical for logical in machines if logical in principals]
    # the jobs' state machine (the only one whose tasks hand out task tokens) first
    state_machine = next((m for m in machines if m == "VideoJobStateMachine"), machines[0] if machines else None)
    roles = {principals[m].role_arn: m for m in machines}
    return Policies(principals, resource_policies, state_machine, str(resolve({"Ref": state_machine})) if state_machine else "", roles)


def _role_statements(role: str, props: dict[str, Any], resolve: Callable[[Any], Any]) -> list[Statement]:
    statements: list[Statement] = []
    for policy in resolve(props.get("Policies", [])):
        document = policy["PolicyDocument"]
        for index, data in enumerate(_as_list(document["Statement"])):
            statements.append(Statement.parse(f"{role}/{policy['PolicyName']}", index, data))
    for arn in resolve(props.get("ManagedPolicyArns", [])):
        if arn not in MANAGED_POLICIES:
            raise PolicyError(f"{role}: local mode does not know the managed policy {arn}; add its document to iam.MANAGED_POLICIES")
        statements.extend(Statement.parse(arn, index, data) for index, data in enumerate(MANAGED_POLICIES[arn]))
    return statements
