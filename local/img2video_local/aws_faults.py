"""What a boto3 call sees of AWS in local mode: injected faults, message size limits, and the freeze of abandoned invocations."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

import botocore.session
import requests
from botocore.client import BaseClient
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from img2video.aws.s3_objects import is_missing

from img2video_local import iam

# What each service answers when it is overloaded or failing, as (code, HTTP status, message); the
# statuses are those of the services' own error shapes in botocore's models.
TRANSIENT_ERRORS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "s3": (
        ("SlowDown", 503, "Please reduce your request rate."),
        ("InternalError", 500, "We encountered an internal error. Please try again."),
    ),
    "sns": (("Throttled", 429, "Rate exceeded"), ("InternalError", 500, "Internal Error")),
    "dynamodb": (
        ("ThrottlingException", 400, "Rate of requests exceeds the allowed throughput."),
        (
            "ProvisionedThroughputExceededException",
            400,
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API.",
        ),
    ),
    "stepfunctions": (("ThrottlingException", 400, "Rate exceeded"),),
    "sqs": (("RequestThrottled", 400, "Request is throttled."),),
    "secretsmanager": (("ThrottlingException", 400, "Rate exceeded"),),
    "lambda": (("TooManyRequestsException", 429, "Rate Exceeded."),),
}
# Why DynamoDB cancels a transaction that did nothing wrong (an injected fault names one item with one of these).
CANCELLATION_REASONS = ("TransactionConflict", "ThrottlingError")
OTHER_TRANSIENT_ERRORS = (("InternalFailure", 500, "The request processing has failed because of an unknown error, exception or failure."),)
# The share of injected failures that never reach the service at all (DNS, refused connection).
CONNECTION_FAILURE_SHARE = 0.2

# SNS: 256 KiB unless the topic's MaximumMessageSize says otherwise. SQS: each queue's MaximumMessageSize,
# whose default AWS raised to 1 MiB in 2025 (botocore's model and moto agree). Both count UTF-8 bytes of
# the body plus every attribute's name, type and value; moto counts only the body's characters.
SNS_DEFAULT_MAX_MESSAGE_BYTES = 262_144
SQS_DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
MIN_MAX_MESSAGE_BYTES = 1_024  # the smallest MaximumMessageSize either service lets a queue or topic have

_MODE = re.compile(r"^(?:once|always|times=(?P<times>\d+)|rate=(?P<rate>\d*\.?\d+))$")
_FUNCTION = re.compile(r"^(\*|[A-Za-z][A-Za-z0-9]*)$")
_PATTERN = re.compile(r"^[A-Za-z0-9*?-]+$")


class FaultSpecError(ValueError):
    """A fault spec that cannot be read; the message names the rule and what is wrong with it."""


RUNTIME_EXIT = "Runtime.ExitError"  # what Lambda reports for a runtime that died mid-invocation ("signal: killed")


class InvocationAbandoned(BaseException):
    """Raised by any AWS or HTTP call from an abandoned invocation's thread: its sandbox is gone.

    A BaseException, so that a handler's `except Exception` cannot swallow it and carry on.
    """


# -- the invocation running in this thread -----------------------------------------------------------------


@dataclass(eq=False)
class Invocation:
    """One handler invocation, as the calls made from its thread see it."""

    function: str
    request_id: str
    abandoned: str | None = None  # the errorType Lambda reported when it gave up on this invocation


_local = threading.local()  # .invocation: the Invocation running in this thread; .depth: boto3 calls under way


def current_invocation() -> Invocation | None:
    invocation: Invocation | None = getattr(_local, "invocation", None)
    return invocation


def current_function() -> str | None:
    """The logical id of the function whose handler runs in this thread, or None (a poller, moto, a test)."""
    invocation = current_invocation()
    return invocation.function if invocation else None


@contextmanager
def running(invocation: Invocation) -> Iterator[Invocation]:
    """Mark this thread as running `invocation`: its boto3 and HTTP calls are then faulted and frozen as its own."""
    previous = current_invocation()
    _local.invocation = invocation
    try:
        yield invocation
    finally:
        _local.invocation = previous
        _hooks.invocation_ended(invocation)


def abandon(invocation: Invocation, error_type: str) -> None:
    """Freeze an invocation: from now on every AWS or HTTP call from its thread raises InvocationAbandoned."""
    _hooks.abandoned(invocation)
    invocation.abandoned = error_type


# -- the fault rules --------------------------------------------------------------------------------------


@dataclass
class FaultRule:
    """FUNCTION:SERVICE.OPERATION:MODE. `once` and `times=N` count per (function, operation) the rule matches."""

    function: str
    service: str
    operation: str
    mode: str
    lost: bool = False
    died: bool = False  # the call is made, then the function's runtime dies (Runtime.ExitError)
    times: int | None = None  # None: no limit
    rate: float = 1.0
    _fired: Counter[tuple[str, str]] = field(default_factory=Counter, repr=False)

    def matches(self, function: str, service: str, operation: str) -> bool:
        return self.function in ("*", function) and fnmatchcase(service, self.service) and fnmatchcase(operation, self.operation)

    def fires(self, function: str, call: str, rng: random.Random) -> bool:
        if self.times is not None and self._fired[(function, call)] >= self.times:
            return False
        if self.rate < 1.0 and rng.random() >= self.rate:
            return False
        self._fired[(function, call)] += 1
        return True


@dataclass(frozen=True)
class _Fault:
    mode: str
    lost: bool = False
    died: bool = False
    connection: bool = False
    code: str = ""
    status: int = 0
    message: str = ""

    def failure(self, client: BaseClient, operation: str, params: dict[str, Any] | None = None) -> Exception:
        """What boto3 raises once botocore's own retries are exhausted."""
        if self.connection:
            unreachable: Exception = EndpointConnectionError(endpoint_url=client.meta.endpoint_url)
            return unreachable
        if self.code == "TransactionCanceledException":
            items: list[Any] = (params or {}).get("TransactItems", [])
            cancelled: Exception = _cancelled_transaction(client, operation, items, self.message)
            return cancelled
        retries = _retry_attempts(client)
        response: dict[str, Any] = {
            "Error": {"Code": self.code, "Message": self.message},
            "ResponseMetadata": {"HTTPStatusCode": self.status, "HTTPHeaders": {}, "RetryAttempts": retries, "MaxAttemptsReached": True},
        }
        error_class: type[ClientError] = client.exceptions.from_code(self.code)
        error: Exception = error_class(response, operation)
        return error


class AwsFaults:
    """Fault rules for the boto3 calls the functions make, e.g. `AwsFaults.parse("StoreFunction:s3.UploadPart:once", seed=7)`.

    Use `with faults:` or install()/uninstall(). A call is faulted only while a handler invocation runs in its
    thread; the first rule that matches and fires decides. `fired` counts (function, "service.Operation", mode).
    """

    def __init__(self, rules: list[FaultRule], seed: int | None = None) -> None:
        self.rules = rules
        self.fired: Counter[tuple[str, str, str]] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._installed = False

    @classmethod
    def parse(cls, spec: str, seed: int | None = None) -> AwsFaults:
        return cls([_parse_rule(text.strip()) for text in spec.split(";") if text.strip()], seed=seed)

    def install(self) -> AwsFaults:
        if not self._installed:
            _hooks.add_faults(self)
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            _hooks.remove_faults(self)
            self._installed = False

    def __enter__(self) -> AwsFaults:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def decide(self, function: str, service: str, operation: str) -> _Fault | None:
        call = f"{service}.{operation}"
        with self._lock:
            for rule in self.rules:
                if rule.matches(function, service, operation) and rule.fires(function, call, self._random):
                    self.fired[(function, call, rule.mode)] += 1
                    if rule.lost or rule.died:
                        return _Fault(rule.mode, lost=rule.lost, died=rule.died)
                    if self._random.random() < CONNECTION_FAILURE_SHARE:
                        return _Fault(rule.mode, connection=True)
                    if service == "dynamodb" and operation in ("TransactWriteItems", "TransactGetItems"):
                        # moto never cancels a transaction but for a failed condition; DynamoDB also cancels for a
                        # conflicting transaction on one of its items, and for throttling (botocore does not retry it)
                        reason = self._random.choice(CANCELLATION_REASONS)
                        return _Fault(rule.mode, code="TransactionCanceledException", status=400, message=reason)
                    code, status, message = self._random.choice(TRANSIENT_ERRORS.get(service, OTHER_TRANSIENT_ERRORS))
                    return _Fault(rule.mode, code=code, status=status, message=message)
        return None


def _parse_rule(text: str) -> FaultRule:
    def bad(why: str) -> FaultSpecError:
        return FaultSpecError(
            f"fault rule {text!r}: {why} (expected FUNCTION:service.Operation:MODE, e.g. StoreFunction:s3.UploadPart:once)"
        )

    parts = text.split(":")
    if len(parts) != 3:
        raise bad("it needs exactly three parts separated by ':'")
    function, call, mode_text = (part.strip() for part in parts)
    if not _FUNCTION.match(function):
        raise bad(f"{function!r} is not a template logical id or *")
    service, operation = _parse_call(call, bad)
    lost = mode_text == "lost" or mode_text.startswith("lost-")
    died = mode_text == "exit" or mode_text.startswith("exit-")
    rule = FaultRule(function, service, operation, mode_text, lost=lost, died=died)
    _parse_mode(rule, mode_text, bad)
    return rule


def _parse_call(call: str, bad: Callable[[str], FaultSpecError]) -> tuple[str, str]:
    """service.Operation, each a botocore name or a wildcard pattern."""
    service, dot, operation = call.partition(".")
    if not dot or not _PATTERN.match(service) or not _PATTERN.match(operation):
        raise bad(f"{call!r} is not service.Operation (botocore service name, API operation name, * wildcards)")
    if not _is_pattern(service):
        if service not in _known_services():
            raise bad(f"unknown service {service!r} (botocore names: s3, sns, sqs, dynamodb, stepfunctions, secretsmanager, lambda, ...)")
        if not _is_pattern(operation) and operation not in _operations(service):
            raise bad(f"{service} has no operation {operation!r}")
    return service, operation


def _parse_mode(rule: FaultRule, mode_text: str, bad: Callable[[str], FaultSpecError]) -> None:
    """How often the rule fails a call: once, times=N, always or rate=R (lost- and exit- name what the failure is)."""
    kind = "always" if mode_text in ("lost", "exit") else mode_text.removeprefix("lost-").removeprefix("exit-")
    mode = _MODE.match(kind)
    if mode is None:
        raise bad(
            f"unknown mode {mode_text!r} (once, times=N, always, rate=R; lost or exit, alone or as lost-once, exit-times=N, lost-rate=R...)"
        )
    if kind == "once":
        rule.times = 1
    elif mode["times"] is not None:
        rule.times = int(mode["times"])
        if rule.times < 1:
            raise bad("times must be at least 1")
    elif mode["rate"] is not None:
        rule.rate = float(mode["rate"])
        if not 0 < rule.rate <= 1:
            raise bad("a rate is a probability in (0, 1]")


def _is_pattern(name: str) -> bool:
    return "*" in name or "?" in name


@cache
def _known_services() -> frozenset[str]:
    return frozenset(botocore.session.get_session().get_available_services())


@cache
def _operations(service: str) -> frozenset[str]:
    return frozenset(botocore.session.get_session().get_service_model(service).operation_names)


def _retry_attempts(client: BaseClient) -> int:
    """How many retries botocore made before giving up, as its ClientError reports them ("reached max retries: N")."""
    retries = client.meta.config.retries or {}
    if "total_max_attempts" in retries:
        return max(0, int(retries["total_max_attempts"]) - 1)
    if "max_attempts" in retries:  # botocore's max_attempts counts retries, not attempts
        return int(retries["max_attempts"])
    return 4 if retries.get("mode") == "legacy" else 2


# -- message size limits ----------------------------------------------------------------------------------


def _attributes_bytes(attributes: dict[str, Any]) -> int:
    size = 0
    for name, attribute in attributes.items():
        value = attribute.get("StringValue", attribute.get("BinaryValue", b""))
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        size += len(value.encode() if isinstance(value, str) else bytes(value))
    return size


def _int_attribute(fetch: Callable[[], dict[str, Any]], name: str, default: int) -> int:
    try:
        return int(fetch().get(name, default))
    except ClientError:  # no such queue or topic: let the real call report that
        return default


def _check_message_size(client: BaseClient, service: str, operation: str, params: dict[str, Any]) -> None:
    if service == "sqs" and operation == "SendMessage":
        size = len(str(params.get("MessageBody", "")).encode()) + _attributes_bytes(params.get("MessageAttributes", {}))
        if size <= MIN_MAX_MESSAGE_BYTES:  # within any queue's limit: no need to ask for this one's
            return
        limit = _int_attribute(
            lambda: client.get_queue_attributes(QueueUrl=params["QueueUrl"], AttributeNames=["MaximumMessageSize"])["Attributes"],
            "MaximumMessageSize",
            SQS_DEFAULT_MAX_MESSAGE_BYTES,
        )
        if size > limit:
            reason = f"One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
            error = {"Code": "InvalidParameterValue", "Message": reason, "QueryErrorCode": "InvalidParameterValue", "Type": "Sender"}
            raise _client_error(client, operation, error)
    elif service == "sns" and operation == "Publish" and "PhoneNumber" not in params:
        size = len(str(params.get("Message", "")).encode()) + _attributes_bytes(params.get("MessageAttributes", {}))
        if size <= MIN_MAX_MESSAGE_BYTES:
            return
        arn = params.get("TopicArn") or params.get("TargetArn", "")
        limit = _int_attribute(
            lambda: client.get_topic_attributes(TopicArn=arn)["Attributes"] if ":" in arn else {},
            "MaximumMessageSize",
            SNS_DEFAULT_MAX_MESSAGE_BYTES,
        )
        if size > limit:
            raise _client_error(
                client, operation, {"Code": "InvalidParameter", "Message": "Invalid parameter: Message too long", "Type": "Sender"}
            )


def _cancelled_transaction(client: BaseClient, operation: str, items: list[Any], reason: str) -> ClientError:
    """TransactionCanceledException as DynamoDB answers it: a reason per item, "None" for those that were fine."""
    reasons = [{"Code": "None"} for _ in items] or [{"Code": "None"}]
    # the last item: in this stack, the shared one (the daily limit's window) that concurrent transactions meet
    reasons[-1] = {"Code": reason, "Message": "Transaction is ongoing for the item" if reason == "TransactionConflict" else "Throttled"}
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{', '.join(r['Code'] for r in reasons)}]"
    response: dict[str, Any] = {
        "Error": {"Code": "TransactionCanceledException", "Message": message},
        "CancellationReasons": reasons,
        "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {}, "RetryAttempts": 0},
    }
    error_class: type[ClientError] = client.exceptions.from_code("TransactionCanceledException")
    return error_class(response, operation)


def _client_error(client: BaseClient, operation: str, error: dict[str, str]) -> ClientError:
    response: dict[str, Any] = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {}, "RetryAttempts": 0}}
    error_class: type[ClientError] = client.exceptions.from_code(error["Code"])
    return error_class(response, operation)


# -- the hooks ------------------------------------------------------------------------------------------


class _Hooks:
    """The patches of BaseClient._make_api_call and requests.Session.send, shared by every user in the process.

    They stay in place while local mode runs (a LocalFunctions or installed AwsFaults) and, after that, while an
    abandoned invocation's thread is still alive, so that it stays frozen.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.faults: list[AwsFaults] = []
        self.policies: list[iam.Policies] = []  # the roles enforced on every call a function or the state machine makes
        self.short_polls: tuple[float, random.Random] | None = None  # how often a function's short poll comes back empty
        self.zombies: set[Invocation] = set()  # abandoned invocations whose thread has not finished yet
        self.original_call: Callable[..., Any] | None = None
        self.original_send: Callable[..., Any] | None = None

    def acquire(self) -> None:
        with self.lock:
            self.users += 1
            self._patch()

    def release(self) -> None:
        with self.lock:
            self.users = max(0, self.users - 1)
            self._unpatch_if_unused()

    def add_faults(self, faults: AwsFaults) -> None:
        with self.lock:
            self.users += 1
            self.faults.append(faults)
            self._patch()

    def remove_faults(self, faults: AwsFaults) -> None:
        with self.lock:
            self.faults.remove(faults)
            self.users = max(0, self.users - 1)
            self._unpatch_if_unused()

    def add_policies(self, policies: iam.Policies) -> None:
        with self.lock:
            self.users += 1
            self.policies.append(policies)
            self._patch()

    def remove_policies(self, policies: iam.Policies) -> None:
        with self.lock:
            if policies in self.policies:
                self.policies.remove(policies)
                self.users = max(0, self.users - 1)
            self._unpatch_if_unused()

    def abandoned(self, invocation: Invocation) -> None:
        with self.lock:
            self.zombies.add(invocation)

    def invocation_ended(self, invocation: Invocation) -> None:
        if invocation in self.zombies:
            with self.lock:
                self.zombies.discard(invocation)
                self._unpatch_if_unused()

    def decide(self, function: str, service: str, operation: str) -> _Fault | None:
        for faults in list(self.faults):
            fault = faults.decide(function, service, operation)
            if fault:
                return fault
        return None

    def _patch(self) -> None:
        if self.original_call is None:
            self.original_call = BaseClient._make_api_call
            BaseClient._make_api_call = _guarded_api_call
        if self.original_send is None:
            self.original_send = requests.Session.send
            requests.Session.send = _guarded_send  # type: ignore[method-assign]  # the patch is the point

    def _unpatch_if_unused(self) -> None:
        if self.users or self.zombies:
            return
        if self.original_call is not None and BaseClient._make_api_call is _guarded_api_call:
            BaseClient._make_api_call = self.original_call
            self.original_call = None
        if self.original_send is not None and requests.Session.send is _guarded_send:
            requests.Session.send = self.original_send  # type: ignore[method-assign]
            self.original_send = None


_hooks = _Hooks()


def install_hooks() -> None:
    """Start enforcing (counted: each call needs one uninstall_hooks()): limits for every call, freezes for abandoned invocations."""
    _hooks.acquire()


def uninstall_hooks() -> None:
    _hooks.release()


def sample_short_polls(rate: float, seed: int | None = None) -> None:
    """From now on, a function's short poll of SQS (ReceiveMessage without WaitTimeSeconds) answers with no messages
    `rate` of the time, messages waiting or not. SQS documents it: a short poll asks a sample of its servers, and from
    a queue holding few messages it often returns none. moto always returns them. 0 turns it off."""
    _hooks.short_polls = (rate, random.Random(seed)) if rate > 0 else None


def _empty_short_poll(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
    sampling = _hooks.short_polls
    if sampling is None or service != "sqs" or operation != "ReceiveMessage" or int(params.get("WaitTimeSeconds", 0)):
        return None
    rate, rng = sampling
    if rng.random() >= rate:
        return None
    return {"ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0}}


def _long_poll(original: Callable[..., Any], client: BaseClient, params: dict[str, Any]) -> Any:
    """SQS's long poll, as AWS answers it (as soon as a message is there, else after WaitTimeSeconds), made of short
    polls: moto would wait inside its request, and local mode runs one SQS request at a time (runtime.serialize_sqs_requests)."""
    deadline = time.monotonic() + int(params["WaitTimeSeconds"])
    short = {**params, "WaitTimeSeconds": 0}
    while True:
        answer = original(client, "ReceiveMessage", short)
        if answer.get("Messages") or time.monotonic() >= deadline:
            return answer
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def enforce_iam(policies: iam.Policies) -> None:
    """From now on, each call a function (or the state machine) makes is allowed only as its role allows it."""
    _hooks.add_policies(policies)


def stop_enforcing_iam(policies: iam.Policies) -> None:
    _hooks.remove_policies(policies)


# moto's Step Functions interpreter makes a state machine's service calls (Lambda invoke, SQS, DynamoDB) with clients
# it signs with these keys: such a call is the state machine's role at work.
_STATE_MACHINE_ACCESS_KEY = "ak"


def _acting(client: BaseClient, invocation: Invocation | None) -> str | None:
    """Whose role a call runs under: an explicit principal, the function whose invocation runs here, or the state machine."""
    named = iam.acting()
    if named:
        return named
    if invocation:
        return invocation.function
    credentials = getattr(client._request_signer, "_credentials", None)
    if credentials is not None and credentials.access_key == _STATE_MACHINE_ACCESS_KEY:
        return iam.STATE_MACHINE
    return None


def _denial(
    client: BaseClient, service: str, operation: str, acting: str, requests: Callable[[iam.Policies], list[iam.Request]]
) -> ClientError | None:
    """The error AWS answers if `acting`'s role is denied any of the requests a call makes, else None."""
    for policies in list(_hooks.policies):
        name = policies.state_machine_of(getattr(client, "img2video_role_arn", "")) if acting == iam.STATE_MACHINE else acting
        principal = policies.principals.get(name)
        if principal is None:
            continue
        for request in requests(policies):
            decision = policies.check(name, request)
            if not decision.allowed:
                message = iam.denial_message(principal, request, decision)
                return iam.denied_error(client, service, operation, message, head=operation.startswith("Head"))
    return None


def _authorize(client: BaseClient, service: str, operation: str, params: dict[str, Any], acting: str) -> None:
    denied = _denial(client, service, operation, acting, lambda p: iam.requests_for(service, operation, params, p.state_machine_arn))
    if denied is not None:
        raise denied


def _missing_key(client: BaseClient, operation: str, params: dict[str, Any], acting: str, error: ClientError) -> ClientError:
    """S3 answers a GetObject or HeadObject of a missing key with 403 unless the caller may list the bucket."""
    if not is_missing(error):
        return error
    bucket = f"arn:aws:s3:::{params.get('Bucket', '')}"
    return _denial(client, "s3", operation, acting, lambda _: [iam.Request("s3:ListBucket", bucket)]) or error


def _frozen(invocation: Invocation) -> InvocationAbandoned:
    return InvocationAbandoned(f"{invocation.function} invocation {invocation.request_id} was abandoned ({invocation.abandoned})")


def _guarded_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
    original = _hooks.original_call
    assert original is not None  # the patch is only in place with the original saved
    depth: int = getattr(_local, "depth", 0)
    if depth:  # a call moto or botocore makes while serving an outer one is AWS's own business
        return original(client, operation, params)
    _local.depth = 1
    try:
        invocation = current_invocation()
        if invocation and invocation.abandoned:
            raise _frozen(invocation)
        if not _hooks.users:  # only a frozen invocation keeps the hooks now
            return original(client, operation, params)
        service = client.meta.service_model.service_name
        acting = _acting(client, invocation) if _hooks.policies else None
        if acting:
            _authorize(client, service, operation, params, acting)
        _check_message_size(client, service, operation, params)
        fault = _hooks.decide(invocation.function, service, operation) if invocation else None
        if fault and not (fault.lost or fault.died):
            raise fault.failure(client, operation, params)
        empty = _empty_short_poll(service, operation, params) if invocation else None
        if empty is not None:
            return empty
        result = _served(original, client, service, operation, params, acting)
        if invocation and invocation.abandoned:  # killed while waiting: the work may be done, the answer is never read
            raise _frozen(invocation)
        if fault and fault.died and invocation:  # the work is done, then the process is killed: Lambda reports ExitError
            abandon(invocation, RUNTIME_EXIT)
            raise _frozen(invocation)
        if fault:
            raise ReadTimeoutError(endpoint_url=client.meta.endpoint_url)
        return result
    finally:
        _local.depth = 0


def _served(original: Any, client: BaseClient, service: str, operation: str, params: dict[str, Any], acting: str | None) -> Any:
    """The call as AWS serves it: an SQS long poll waits for messages; S3 answers a missing key as the role allows."""
    try:
        if service == "sqs" and operation == "ReceiveMessage" and int(params.get("WaitTimeSeconds", 0)):
            return _long_poll(original, client, params)
        return original(client, operation, params)
    except ClientError as error:
        if acting and service == "s3" and operation in ("GetObject", "HeadObject"):
            raise _missing_key(client, operation, params, acting, error) from None
        raise


def _guarded_send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
    original = _hooks.original_send
    assert original is not None
    invocation = current_invocation()
    if invocation and invocation.abandoned:
        raise _frozen(invocation)
    response: requests.Response = original(self, request, **kwargs)
    if invocation and invocation.abandoned:
        response.close()
        raise _frozen(invocation)
    return response
