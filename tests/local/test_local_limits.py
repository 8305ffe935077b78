"""Local mode's Lambda limits (timeout, memory, payloads) and AWS's own faults, as a handler and its caller see them."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from img2video_local.aws_faults import AwsFaults, FaultSpecError, current_function, install_hooks, uninstall_hooks
from img2video_local.lambda_server import (
    OUT_OF_MEMORY,
    RUNTIME_BASELINE_MIB,
    TIMED_OUT,
    LambdaError,
    LocalFunctions,
    start_invoke_server,
)
from img2video_local.moto_patches import (
    dynamodb_transactions_copy_only_their_items,
    one_start_per_execution_name,
    one_thread_per_execution,
    parse_each_definition_once,
    scale_state_durations,
    serialize_sqs_requests,
    sqs_named_attributes_in_constant_time,
    sqs_queue_attributes_count_in_one_pass,
)
from img2video_local.template import REGION, FunctionSpec
from moto import mock_aws

BUCKET = "limits-test-bucket"
S3_FAILURES = {"SlowDown", "InternalError", "EndpointConnectionError"}

HANDLERS = '''
import json
import os
import time

import boto3
import requests
from botocore.exceptions import ClientError


def sleeper(event, context):
    """Sleeps past its timeout, then tries to change the world."""
    time.sleep(event["sleep"])
    seen = {}
    try:
        boto3.client("s3", region_name="us-east-1").put_object(Bucket=event["bucket"], Key="late", Body=b"x")
        seen["s3"] = "ok"
    except BaseException as exc:
        seen["s3"] = type(exc).__name__
    try:
        requests.get("http://127.0.0.1:9/", timeout=1)
        seen["http"] = "ok"
    except BaseException as exc:
        seen["http"] = type(exc).__name__
    with open(event["report"] + ".part", "w") as handle:
        json.dump(seen, handle)
    os.replace(event["report"] + ".part", event["report"])  # a reader never sees a half-written report
    return seen


def remaining(event, context):
    return context.get_remaining_time_in_millis()


def hog(event, context):
    blocks = []
    for _ in range(event["mib"]):
        blocks.append(bytearray(1 << 20))
        time.sleep(event.get("pause", 0))
    return len(blocks)


def unserializable(event, context):
    return {1, 2}


def failing(event, context):
    raise ValueError("bad input")


def s3_calls(event, context):
    s3 = boto3.client("s3", region_name="us-east-1")
    outcomes = []
    for index in range(event["calls"]):
        try:
            s3.put_object(Bucket=event["bucket"], Key=f"k{index}", Body=b"x")
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    return outcomes
'''


def _spec(code: Path, logical: str, handler: str, timeout: int = 30, memory: int = 128) -> FunctionSpec:
    return FunctionSpec(logical_id=logical, code_uri=code, handler=f"app.{handler}", environment={}, timeout=timeout, memory=memory)


@pytest.fixture
def code(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(HANDLERS), encoding="utf-8")
    return tmp_path


@pytest.fixture
def functions(code: Path) -> Iterator[LocalFunctions]:
    specs = [
        _spec(code, "SleepFunction", "sleeper", timeout=1),
        _spec(code, "ClockFunction", "remaining", timeout=30),
        # Lambda's longest timeout (90 s at this time scale): its memory limit, not a loaded machine's slowness, stops it
        _spec(code, "HogFunction", "hog", timeout=900, memory=128),
        _spec(code, "MarshalFunction", "unserializable"),
        _spec(code, "FailingFunction", "failing"),
        _spec(code, "StoreFunction", "s3_calls"),
    ]
    local = LocalFunctions({spec.logical_id: spec for spec in specs}, time_scale=0.1)
    yield local
    local.close()


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


def _wait_for(path: Path, seconds: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _exists(s3: Any, key: str) -> bool:
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
    except ClientError:
        return False
    return True


# -- timeout ------------------------------------------------------------------------------------------


def test_a_handler_past_its_timeout_is_abandoned_and_frozen(functions: LocalFunctions, s3: Any, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    with pytest.raises(LambdaError) as raised:
        functions.invoke("SleepFunction", {"sleep": 5.0, "bucket": BUCKET, "report": str(report)})

    assert not report.exists()  # the invocation ended at its scaled timeout (0.1 s), not when the handler did
    assert raised.value.error_type == TIMED_OUT == "Sandbox.Timedout"
    assert re.fullmatch(r"RequestId: [0-9a-f-]{36} Error: Task timed out after 1\.00 seconds", str(raised.value))
    # The abandoned thread wakes up later: its AWS and HTTP calls raise, and nothing reaches moto.
    assert _wait_for(report) == {"s3": "InvocationAbandoned", "http": "InvocationAbandoned"}
    assert not _exists(s3, "late")


def test_the_context_counts_down_from_the_scaled_timeout(functions: LocalFunctions) -> None:
    remaining = functions.invoke("ClockFunction", {})

    assert 2000 < remaining <= 3000  # 30 s scaled by 0.1


# -- memory -------------------------------------------------------------------------------------------


def test_a_handler_over_its_memory_is_killed(functions: LocalFunctions) -> None:
    with pytest.raises(LambdaError) as raised:
        functions.invoke("HogFunction", {"mib": 128 - RUNTIME_BASELINE_MIB + 10})

    assert raised.value.error_type == OUT_OF_MEMORY == "Runtime.OutOfMemory"
    assert re.fullmatch(r"RequestId: [0-9a-f-]{36} Error: Runtime exited with error: signal: killed", str(raised.value))
    assert functions.peak_memory_mib["HogFunction"] >= 128  # killed as it crossed the limit (rounded to 0.1 MiB)


def test_a_handler_growing_past_its_memory_is_stopped_while_it_runs(functions: LocalFunctions) -> None:
    with pytest.raises(LambdaError, match="signal: killed"):
        functions.invoke("HogFunction", {"mib": 100, "pause": 0.05})  # would take over 5 s to finish

    handlers = [thread for thread in threading.enumerate() if thread.name == "lambda-HogFunction"]
    assert any(thread.is_alive() for thread in handlers)  # killed while it ran, not when it ended
    for thread in handlers:  # let the abandoned handler finish and free its memory
        thread.join(timeout=60)


def test_memory_limits_are_off_only_when_asked_and_then_nothing_is_traced(code: Path) -> None:
    """bench/burst.py measures scheduling without tracemalloc's tax; the default (every test, the demo) enforces."""
    spec = _spec(code, "HogFunction", "hog", memory=128)
    untraced = LocalFunctions({spec.logical_id: spec}, memory_limits=False)
    try:
        assert not tracemalloc.is_tracing()
        assert untraced.invoke("HogFunction", {"mib": 128 - RUNTIME_BASELINE_MIB + 10}) == 128 - RUNTIME_BASELINE_MIB + 10
    finally:
        untraced.close()
    enforced = LocalFunctions({spec.logical_id: spec})
    try:
        assert tracemalloc.is_tracing()
        with pytest.raises(LambdaError, match="signal: killed"):
            enforced.invoke("HogFunction", {"mib": 128 - RUNTIME_BASELINE_MIB + 10})
    finally:
        enforced.close()
        for thread in threading.enumerate():  # let the abandoned handler finish and free its memory
            if thread.name == "lambda-HogFunction":
                thread.join(timeout=2)
    assert not tracemalloc.is_tracing()


def test_a_handler_within_its_limits_returns_and_its_peak_is_recorded(functions: LocalFunctions) -> None:
    assert functions.invoke("HogFunction", {"mib": 10}) == 10

    assert functions.invocations["HogFunction"] == 1
    assert RUNTIME_BASELINE_MIB + 10 <= functions.peak_memory_mib["HogFunction"] < 128


def test_a_users_upload_during_an_invocation_is_not_charged_to_it(functions: LocalFunctions) -> None:
    """The guarantees suite uploads a 50 MB image while Accept runs: on AWS that memory is on the user's machine."""
    from img2video_local.lambda_server import not_a_lambda

    def upload_big_file() -> None:
        time.sleep(0.05)
        with not_a_lambda():
            kept.append(bytearray(200 << 20))  # what moto keeps of a large object, and more

    kept: list[bytearray] = []
    uploader = threading.Thread(target=upload_big_file)
    uploader.start()
    assert functions.invoke("HogFunction", {"mib": 10, "pause": 0.02}) == 10  # 0.2 s, the upload in the middle
    uploader.join()
    assert functions.peak_memory_mib["HogFunction"] < 128
    kept.clear()


def test_memory_allocated_beside_an_invocation_outside_that_window_is_still_charged(functions: LocalFunctions) -> None:
    """Local mode stays strict: only what is declared a user's upload is excused."""

    def allocate() -> None:
        time.sleep(0.05)
        kept.append(bytearray(200 << 20))

    kept: list[bytearray] = []
    other = threading.Thread(target=allocate)
    other.start()
    with pytest.raises(LambdaError, match="signal: killed"):
        functions.invoke("HogFunction", {"mib": 10, "pause": 0.02})
    other.join()
    kept.clear()


# -- what the caller gets back ------------------------------------------------------------------------


def test_a_handler_error_reaches_the_caller_and_the_hook(code: Path) -> None:
    seen: list[tuple[str, Any, BaseException | None]] = []
    spec = _spec(code, "FailingFunction", "failing")
    local = LocalFunctions({"FailingFunction": spec}, on_invoke=lambda name, event, result, error: seen.append((name, result, error)))
    try:
        with pytest.raises(ValueError, match="bad input"):
            local.invoke("FailingFunction", {})
    finally:
        local.close()

    assert [(name, type(error).__name__) for name, _, error in seen] == [("FailingFunction", "ValueError")]


def test_a_result_lambda_cannot_serialize_is_a_marshal_error(functions: LocalFunctions) -> None:
    with pytest.raises(LambdaError) as raised:
        functions.invoke("MarshalFunction", {})

    assert raised.value.error_type == "Runtime.MarshalError"


def test_the_invoke_api_reports_limits_as_lambda_does(functions: LocalFunctions, tmp_path: Path) -> None:
    server, url = start_invoke_server(functions)
    try:
        client = boto3.client("lambda", region_name=REGION, endpoint_url=url)
        name = functions.specs["SleepFunction"].name
        event = {"sleep": 0.2, "bucket": BUCKET, "report": str(tmp_path / "r.json")}

        answer = client.invoke(FunctionName=name, Payload=json.dumps(event).encode())
        payload = json.loads(answer["Payload"].read())
        assert answer["FunctionError"] == "Unhandled"
        assert payload["errorType"] == "Sandbox.Timedout"
        assert payload["errorMessage"].endswith("Error: Task timed out after 1.00 seconds")

        with pytest.raises(ClientError) as raised:
            client.invoke(FunctionName=name, Payload=json.dumps({"blob": "x" * (6 * 1024 * 1024)}).encode())
        assert raised.value.response["Error"]["Code"] == "RequestTooLargeException"
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        _wait_for(tmp_path / "r.json")
    finally:
        server.shutdown()
        server.server_close()


def test_invoke_takes_a_published_version_or_alias_and_refuses_one_that_does_not_exist(code: Path) -> None:
    """The state machine invokes Poll, Store and Publish by version ARN (template.yaml); Lambda refuses an unknown
    qualifier with ResourceNotFoundException, and so does local mode."""
    published = FunctionSpec(
        logical_id="ClockFunction", code_uri=code, handler="app.remaining", environment={}, timeout=30, memory=128, alias="live"
    )
    plain = _spec(code, "FailingFunction", "failing")
    functions = LocalFunctions({spec.logical_id: spec for spec in (published, plain)})
    server, url = start_invoke_server(functions)
    try:
        client = boto3.client("lambda", region_name=REGION, endpoint_url=url)
        for name, qualifier in ((f"{published.arn}:1", None), (f"{published.name}:live", None), (published.arn, "1")):
            answer = client.invoke(FunctionName=name, **({"Qualifier": qualifier} if qualifier else {}))
            assert answer["StatusCode"] == 200 and answer["ExecutedVersion"] == "1", name
        assert client.invoke(FunctionName=published.arn)["ExecutedVersion"] == "$LATEST"
        for name in (f"{published.arn}:7", f"{published.arn}:beta", f"{plain.arn}:1"):
            with pytest.raises(ClientError) as raised:
                client.invoke(FunctionName=name)
            assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException", name
    finally:
        server.shutdown()
        server.server_close()
        functions.close()


# -- AWS faults ---------------------------------------------------------------------------------------


def _store(functions: LocalFunctions, calls: int) -> list[str]:
    outcomes: list[str] = functions.invoke("StoreFunction", {"bucket": BUCKET, "calls": calls})
    return outcomes


def test_once_fails_the_first_call_only(functions: LocalFunctions, s3: Any) -> None:
    with AwsFaults.parse("StoreFunction:s3.PutObject:once", seed=1) as faults:
        outcomes = _store(functions, 3)

    assert outcomes[0] in S3_FAILURES and outcomes[1:] == ["ok", "ok"]
    assert faults.fired == {("StoreFunction", "s3.PutObject", "once"): 1}
    assert not _exists(s3, "k0") and _exists(s3, "k1")


def test_times_fails_that_many_calls(functions: LocalFunctions, s3: Any) -> None:
    with AwsFaults.parse("StoreFunction:s3.PutObject:times=2", seed=1) as faults:
        outcomes = _store(functions, 3)

    assert set(outcomes[:2]) <= S3_FAILURES and outcomes[2] == "ok"
    assert faults.fired[("StoreFunction", "s3.PutObject", "times=2")] == 2


def test_always_fails_every_call_with_wildcards(functions: LocalFunctions, s3: Any) -> None:
    with AwsFaults.parse("*:s3.Put*:always", seed=3):
        outcomes = _store(functions, 4)

    assert set(outcomes) <= S3_FAILURES
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_rate_with_a_seed_fails_the_same_calls_every_run(functions: LocalFunctions, s3: Any) -> None:
    runs = []
    for _ in range(2):
        with AwsFaults.parse("StoreFunction:s3.*:rate=0.5", seed=7) as faults:
            outcomes = _store(functions, 20)
        failed = [outcome != "ok" for outcome in outcomes]
        assert sum(failed) == faults.fired[("StoreFunction", "s3.PutObject", "rate=0.5")]
        runs.append(failed)

    assert runs[0] == runs[1]
    assert 0 < sum(runs[0]) < 20


def test_lost_does_the_work_but_the_answer_never_arrives(functions: LocalFunctions, s3: Any) -> None:
    with AwsFaults.parse("StoreFunction:s3.PutObject:lost") as faults:
        outcomes = _store(functions, 1)

    assert outcomes == ["ReadTimeoutError"]
    assert _exists(s3, "k0")
    assert faults.fired == {("StoreFunction", "s3.PutObject", "lost"): 1}


def test_rules_for_other_functions_and_calls_outside_invocations_are_never_faulted(functions: LocalFunctions, s3: Any) -> None:
    with AwsFaults.parse("PublishFunction:s3.*:always;*:s3.*:lost-always") as faults:
        faults.rules.pop()  # keep only the rule for another function, and check the direct call below
        assert _store(functions, 2) == ["ok", "ok"]
    with AwsFaults.parse("*:*.*:always") as faults:
        s3.put_object(Bucket=BUCKET, Key="direct", Body=b"x")
        assert current_function() is None

    assert _exists(s3, "direct")
    assert not faults.fired


def test_a_failure_looks_like_botocore_after_its_retries() -> None:
    faults = AwsFaults.parse("*:s3.PutObject:always", seed=0)
    client = boto3.client("s3", region_name=REGION)
    errors = [
        fault.failure(client, "PutObject") for fault in (faults.decide("StoreFunction", "s3", "PutObject") for _ in range(30)) if fault
    ]

    client_errors = [error for error in errors if isinstance(error, ClientError)]
    assert {error.response["Error"]["Code"] for error in client_errors} == {"SlowDown", "InternalError"}
    assert all("(reached max retries: 2)" in str(error) for error in client_errors)
    assert any(type(error).__name__ == "EndpointConnectionError" for error in errors)


def test_the_briefs_example_spec_parses() -> None:
    spec = (
        "StoreFunction:s3.UploadPart:once;PublishFunction:sns.Publish:lost;*:dynamodb.*:rate=0.05;"
        "AcceptFunction:s3.GetObject:times=3;*:secretsmanager.GetSecretValue:always"
    )
    rules = AwsFaults.parse(spec, seed=7).rules

    assert [(rule.function, rule.service, rule.operation, rule.mode) for rule in rules] == [
        ("StoreFunction", "s3", "UploadPart", "once"),
        ("PublishFunction", "sns", "Publish", "lost"),
        ("*", "dynamodb", "*", "rate=0.05"),
        ("AcceptFunction", "s3", "GetObject", "times=3"),
        ("*", "secretsmanager", "GetSecretValue", "always"),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "StoreFunction:s3.PutObject",
        "Store-Function:s3.PutObject:once",
        "StoreFunction:s3:once",
        "StoreFunction:dynamo.PutItem:once",
        "StoreFunction:s3.putObject:once",
        "StoreFunction:s3.PutObject:twice",
        "StoreFunction:s3.PutObject:rate=1.5",
        "StoreFunction:s3.PutObject:times=0",
        "StoreFunction:s3.PutObject:lost-",
    ],
)
def test_a_bad_spec_is_refused_clearly(spec: str) -> None:
    with pytest.raises(FaultSpecError, match="fault rule") as raised:
        AwsFaults.parse(spec)

    assert isinstance(raised.value, ValueError)


# -- message size limits ------------------------------------------------------------------------------


@pytest.fixture
def limits() -> Iterator[None]:
    with mock_aws():
        install_hooks()
        try:
            yield
        finally:
            uninstall_hooks()


def _code(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    code: str = raised.value.response["Error"]["Code"]
    return code


def test_sns_counts_bytes_and_attributes_against_256_kib(limits: None) -> None:
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="limits")["TopicArn"]
    attribute = {"note": {"DataType": "String", "StringValue": "v" * 1000}}

    assert _code(lambda: sns.publish(TopicArn=topic, Message="é" * 140_000)) == "InvalidParameter"  # 280,000 bytes
    assert _code(lambda: sns.publish(TopicArn=topic, Message="a" * 262_000, MessageAttributes=attribute)) == "InvalidParameter"
    sns.publish(TopicArn=topic, Message="a" * 261_000, MessageAttributes=attribute)


def test_sqs_counts_bytes_and_attributes_against_the_queues_maximum(limits: None) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    small = sqs.create_queue(QueueName="limits-256", Attributes={"MaximumMessageSize": "262144"})["QueueUrl"]
    default = sqs.create_queue(QueueName="limits-default")["QueueUrl"]
    attribute = {"note": {"DataType": "String", "StringValue": "v" * 1000}}

    assert (
        _code(lambda: sqs.send_message(QueueUrl=small, MessageBody="a" * 262_000, MessageAttributes=attribute)) == "InvalidParameterValue"
    )
    assert _code(lambda: sqs.send_message(QueueUrl=default, MessageBody="é" * 600_000)) == "InvalidParameterValue"  # 1.2 MB
    sqs.send_message(QueueUrl=small, MessageBody="a" * 261_000, MessageAttributes=attribute)
    sqs.send_message(QueueUrl=default, MessageBody="a" * 600_000)  # AWS's default maximum is 1 MiB since 2025


def test_sqs_still_drops_a_message_older_than_its_queues_retention_period(limits: None) -> None:
    """moto's retention check asks for one attribute, and moto_patches.sqs_named_attributes_in_constant_time reads it
    alone instead of computing all of them: same answer."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    sqs_named_attributes_in_constant_time()
    sqs = boto3.client("sqs", region_name=REGION)
    urls = {name: sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"] for name in ("old", "new")}
    for name, url in urls.items():
        sqs.send_message(QueueUrl=url, MessageBody=name)
    (old,) = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].get_queue("old")._messages
    old.sent_timestamp -= 61_000  # sent 61 s ago: past the queue's 60 s

    assert "Messages" not in sqs.receive_message(QueueUrl=urls["old"])
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=urls["new"])["Messages"]] == ["new"]


def test_named_queue_attributes_answer_as_moto_does_without_counting_the_messages(limits: None) -> None:
    """Local mode asks a queue's MaximumMessageSize on every large send (as SQS checks it); moto computed every
    attribute to answer, counting the queue's messages each time, so a SubmitQueue holding thousands of jobs made each
    send slower (moto_patches.sqs_named_attributes_in_constant_time). The answer is moto's own, counted only when
    asked for, and a message too large for its queue is still refused."""
    from moto.sqs.models import Queue

    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="held", Attributes={"MaximumMessageSize": "2048", "VisibilityTimeout": "45"})["QueueUrl"]
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"job {n}")
    named = ["MaximumMessageSize", "VisibilityTimeout", "SqsManagedSseEnabled", "QueueArn", "DelaySeconds"]
    before = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=named)["Attributes"]
    sqs_named_attributes_in_constant_time()
    counted = []
    messages = Queue.messages
    with _patched(Queue, "messages", property(lambda queue: counted.append(queue.name) or messages.fget(queue))):  # type: ignore[attr-defined]
        after = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=named)["Attributes"]
        assert counted == []
        count = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert after == before and after["MaximumMessageSize"] == "2048" and after["SqsManagedSseEnabled"] == "true"
    assert count == {"ApproximateNumberOfMessages": "3"} and counted
    with pytest.raises(ClientError, match="shorter than 2048 bytes"):
        sqs.send_message(QueueUrl=url, MessageBody="x" * 2049)


def test_a_transaction_is_all_or_nothing_without_copying_its_tables(limits: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto deep-copied every table a transaction names, to put it back if a part failed: with the jobs table holding
    an item per job and attempt, each job's transactions cost O(table) under the DynamoDB lock and a 10,000-line
    manifest's acceptance grew quadratic (moto_patches.dynamodb_transactions_copy_only_their_items). A failed
    transaction still leaves every item as it was (updated, put, deleted), a successful one writes them all, and no
    table is copied."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.table import Table

    dynamodb_transactions_copy_only_their_items()
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(
        TableName="jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    ddb.create_table(
        TableName="counters",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    ddb.put_item(TableName="jobs", Item={"pk": {"S": "job"}, "sk": {"S": "attempt"}, "n": {"N": "1"}})
    ddb.put_item(TableName="counters", Item={"id": {"S": "day"}, "n": {"N": "7"}})
    ddb.put_item(TableName="counters", Item={"id": {"S": "gone"}, "n": {"N": "0"}})
    tables = dict(dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables)

    def bump(condition: str) -> list[dict[str, Any]]:
        return [
            {
                "Update": {
                    "TableName": "jobs",
                    "Key": {"pk": {"S": "job"}, "sk": {"S": "attempt"}},
                    "UpdateExpression": "SET n = n + :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
            {"Put": {"TableName": "jobs", "Item": {"pk": {"S": "job"}, "sk": {"S": "attempt#2"}}}},
            {"Delete": {"TableName": "counters", "Key": {"id": {"S": "gone"}}}},
            {
                "Update": {
                    "TableName": "counters",
                    "Key": {"id": {"S": "day"}},
                    "UpdateExpression": "SET n = n + :one",
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": "7"}},
                }
            },
        ]

    def state() -> tuple[str | None, bool, bool, str]:
        attempt = ddb.get_item(TableName="jobs", Key={"pk": {"S": "job"}, "sk": {"S": "attempt"}})["Item"]["n"]["N"]
        second = "Item" in ddb.get_item(TableName="jobs", Key={"pk": {"S": "job"}, "sk": {"S": "attempt#2"}})
        gone = "Item" not in ddb.get_item(TableName="counters", Key={"id": {"S": "gone"}})
        return attempt, second, gone, ddb.get_item(TableName="counters", Key={"id": {"S": "day"}})["Item"]["n"]["N"]

    def copied(*args: Any) -> Any:
        raise AssertionError("a whole table was copied")

    monkeypatch.setattr(Table, "__deepcopy__", copied, raising=False)
    with pytest.raises(ClientError, match="TransactionCanceled"):
        ddb.transact_write_items(TransactItems=bump("n < :limit"))  # the daily limit is reached: nothing changes
    assert state() == ("1", False, False, "7")
    ddb.transact_write_items(TransactItems=bump("n <= :limit"))
    assert state() == ("2", True, True, "8")
    assert dict(dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables) == tables  # the same tables, not copies


def test_a_queues_attributes_count_its_messages_as_moto_does(limits: None) -> None:
    """moto counted a queue's messages three times, reading the clock per message, on every send
    (moto_patches.sqs_queue_attributes_count_in_one_pass): the counts and every other attribute are the same in one
    pass, for messages waiting, in flight and delayed, on a standard and a FIFO queue."""
    from moto.sqs.models import Queue

    sqs = boto3.client("sqs", region_name=REGION)
    sqs.create_queue(QueueName="dlq")
    standard = sqs.create_queue(
        QueueName="work",
        Attributes={"RedrivePolicy": '{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:dlq", "maxReceiveCount": "3"}'},
    )
    fifo = sqs.create_queue(QueueName="work.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})
    for n in range(5):
        sqs.send_message(QueueUrl=standard["QueueUrl"], MessageBody=f"waiting {n}")
        sqs.send_message(QueueUrl=standard["QueueUrl"], MessageBody=f"delayed {n}", DelaySeconds=600)
        sqs.send_message(QueueUrl=fifo["QueueUrl"], MessageBody=f"in order {n}", MessageGroupId="g")
    sqs.receive_message(QueueUrl=standard["QueueUrl"], MaxNumberOfMessages=2, VisibilityTimeout=600)
    sqs.receive_message(QueueUrl=fifo["QueueUrl"], MaxNumberOfMessages=1, VisibilityTimeout=600)
    before = [sqs.get_queue_attributes(QueueUrl=q["QueueUrl"], AttributeNames=["All"])["Attributes"] for q in (standard, fifo)]
    attributes = Queue.attributes
    try:
        sqs_queue_attributes_count_in_one_pass()
        after = [sqs.get_queue_attributes(QueueUrl=q["QueueUrl"], AttributeNames=["All"])["Attributes"] for q in (standard, fifo)]
    finally:
        Queue.attributes = attributes  # type: ignore[method-assign]
    assert after == before
    assert [after[0][f"ApproximateNumberOfMessages{kind}"] for kind in ("", "NotVisible", "Delayed")] == ["3", "2", "5"]
    assert [after[1][f"ApproximateNumberOfMessages{kind}"] for kind in ("", "NotVisible", "Delayed")] == ["4", "1", "0"]


def _race(target: Callable[[], None], threads: int, switch_seconds: float) -> None:
    """Run `target` on this many threads at once, switching between them every `switch_seconds`, and wait for all."""
    running = [threading.Thread(target=target) for _ in range(threads)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(switch_seconds)
    try:
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
    finally:
        sys.setswitchinterval(switch)


def test_a_queue_polled_while_its_messages_are_deleted_never_fails_a_receive(limits: None) -> None:
    """chaos found it: moto's receive iterates the queue's in-flight set while another thread's delete changes it; the
    RuntimeError killed the thread polling the UploadQueue, and half the run's jobs never got a notice. On AWS a
    receive never fails because of a concurrent delete (runtime.serialize_sqs_requests)."""
    serialize_sqs_requests()
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="busy")["QueueUrl"]
    for start in range(0, 400, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(start + i)} for i in range(10)])
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages"):
                for message in messages:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        except BaseException as exc:  # any failure of a receive or delete is the finding
            errors.append(exc)

    _race(worker, threads=6, switch_seconds=1e-5)  # threads switch often, as on a loaded machine: the race shows in most runs
    assert errors == []
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    assert attributes["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_an_event_source_mapping_keeps_polling_after_a_receive_fails(limits: None) -> None:
    """A receive that failed once (a local-mode fault such as the one above) must not stop the function's polling for
    good: on AWS the event source mapping polls on."""
    from img2video_local.event_sources import SqsPoller, SqsSource

    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="uploads")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="after the failure")
    real_receive, failures = sqs.receive_message, [RuntimeError("Set changed size during iteration")]

    def receive(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_receive(**kwargs)

    delivered: list[str] = []
    stop = threading.Event()

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        delivered.extend(r["body"] for r in event["Records"])
        stop.set()
        return {}

    poller = SqsPoller(SqsSource("AcceptFunction", url, "arn:aws:sqs:us-east-1:123456789012:uploads", 10, 2), sqs, invoke, stop, 1)
    sqs.receive_message = receive  # type: ignore[method-assign]
    thread = threading.Thread(target=poller.run)
    thread.start()
    thread.join(timeout=10)
    assert delivered == ["after the failure"] and not thread.is_alive()


def test_concurrent_invocations_never_see_another_ones_metrics_flush() -> None:
    """Lambda runs one invocation per process at a time; local mode runs many in threads of one process, sharing
    Powertools' metric set. A flush must never raise because another invocation's flush emptied the set meanwhile."""
    import contextlib
    import io

    from aws_lambda_powertools import Metrics
    from img2video_local.moto_patches import one_metrics_flush_at_a_time

    one_metrics_flush_at_a_time()
    metrics = Metrics(namespace="img2video-test", service="t")
    errors: list[BaseException] = []

    def invocation() -> None:
        try:
            for _ in range(300):
                metrics.add_metric(name="Polled", unit="Count", value=1)
                metrics.flush_metrics()
        except BaseException as exc:
            errors.append(exc)

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _race(invocation, threads=8, switch_seconds=1e-6)  # switching as often as possible, it shows within a few hundred flushes
    assert not errors, errors[:3]


def test_the_local_eventbridge_keeps_delivering_after_a_failed_look() -> None:
    """moto's ListExecutions can fail while an execution is being started (its status not set yet). EventBridge does not
    stop: the backstop must still get every ended execution after such a moment, or a job can end without a notice."""
    from unittest import mock

    from img2video_local.eventbridge import ExecutionStatusEvents

    arn = "arn:aws:states:us-east-1:123456789012:execution:m:job-1"
    pages = [AttributeError("'NoneType' object has no attribute 'value'"), [{"executions": [{"executionArn": arn}]}]]

    def paginate(**_: object) -> object:
        page = pages.pop(0) if pages else [{"executions": [{"executionArn": arn}]}]
        if isinstance(page, Exception):
            raise page
        return page

    sfn = mock.MagicMock()
    sfn.get_paginator.return_value.paginate.side_effect = paginate
    sfn.describe_execution.return_value = {"name": "job-1", "status": "FAILED", "input": "{}"}
    delivered: list[dict[str, object]] = []
    stop = threading.Event()
    events = ExecutionStatusEvents(sfn, "arn:aws:states:us-east-1:123456789012:stateMachine:m", ["FAILED"], delivered.append, print, stop)
    watcher = threading.Thread(target=events.run, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 5
    while not delivered and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    watcher.join(2)
    assert events.missed_looks == 1 and [e["detail"]["executionArn"] for e in delivered] == [arn]  # type: ignore[index]


def test_the_time_scale_shrinks_wait_states_and_state_timeouts_in_proportion() -> None:
    """A Wait of 20 s and a callback task's TimeoutSeconds of 40 s take 1 s and 2 s at a scale of 0.05, and the
    timeout still ends the task as States.Timeout (runtime.scale_state_durations)."""
    definition = {
        "StartAt": "Nap",
        "States": {
            "Nap": {"Type": "Wait", "Seconds": 20, "Next": "AwaitAnswer"},
            "AwaitAnswer": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": "${queue}", "MessageBody": {"token.$": "$$.Task.Token"}},
                "TimeoutSeconds": 40,
                "End": True,
            },
        },
    }
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # type: ignore[call-overload]
        queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="answers")["QueueUrl"]
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machine = sfn.create_state_machine(
            name="scaled",
            definition=json.dumps(definition).replace("${queue}", queue),
            roleArn="arn:aws:iam::123456789012:role/scaled",
        )["stateMachineArn"]
        scale_state_durations(0.05)
        try:
            started = time.monotonic()
            execution = sfn.start_execution(stateMachineArn=machine)["executionArn"]
            while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING" and time.monotonic() - started < 30:
                time.sleep(0.05)
            took = time.monotonic() - started
        finally:
            scale_state_durations(1.0)
        events = sfn.get_execution_history(executionArn=execution)["events"]
    assert 2.5 <= took < 10, took  # 1 s + 2 s, not 60 s
    failed = [e for e in events if e["type"] == "ExecutionFailed"]
    assert failed and failed[0]["executionFailedEventDetails"]["error"] == "States.Timeout"


def _starts_at_once(patched: bool, rounds: int = 6) -> tuple[dict[str, set[str]], list[str], list[BaseException]]:
    """Rounds of eight StartExecutions of one name and input at once: the ARNs answered per name, the executions
    listed, the errors."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # type: ignore[call-overload]
        if patched:
            one_start_per_execution_name()
        sfn = boto3.client("stepfunctions", region_name=REGION)
        waits = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 600, "End": True}}}
        machine = sfn.create_state_machine(name="once", definition=json.dumps(waits), roleArn="arn:aws:iam::123456789012:role/once")
        arns: dict[str, set[str]] = {}
        errors: list[BaseException] = []
        for round_ in range(rounds):
            name = f"job-{round_}"

            def start(name: str = name) -> None:
                try:
                    arn = sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name=name, input="{}")["executionArn"]
                    arns.setdefault(name, set()).add(arn)
                except BaseException as exc:
                    errors.append(exc)

            _race(start, threads=8, switch_seconds=1e-5)
        listed = [e["name"] for e in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]]
        for arn in set().union(*arns.values()):
            sfn.stop_execution(executionArn=arn)
        return arns, listed, errors


def test_two_starts_of_one_execution_name_at_once_make_one_execution() -> None:
    """StartExecution is idempotent per name while the execution runs (moto_patches.one_start_per_execution_name):
    Accept's image and sidecar events, accepted at once, must make one execution of their job, not two. Unlocked,
    moto listed a name twice (or refused a start) in about one round of three."""
    arns, listed, errors = _starts_at_once(patched=True)
    assert errors == [] and all(len(answered) == 1 for answered in arns.values())
    assert sorted(listed) == [f"job-{round_}" for round_ in range(6)]


def _listed_while_starting(patched: bool, rounds: int = 5) -> list[BaseException]:
    """Executions started while others are listed, on a machine so loaded that a start pauses between recording the
    execution and marking it RUNNING: the errors the listings met."""
    from moto.stepfunctions.parser.backend.execution import Execution

    original = Execution.start

    def slow_start(self: Any) -> None:
        time.sleep(0.05)  # what a CPU hog beside the suite does to this thread
        original(self)

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), _patched(Execution, "start", slow_start):  # type: ignore[call-overload]
        if patched:
            one_start_per_execution_name()
        sfn = boto3.client("stepfunctions", region_name=REGION)
        waits = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 600, "End": True}}}
        machine = sfn.create_state_machine(name="seen", definition=json.dumps(waits), roleArn="arn:aws:iam::123456789012:role/seen")
        arn, errors, started = machine["stateMachineArn"], [], []
        for round_ in range(rounds):
            starting = threading.Thread(
                target=lambda round_=round_: started.append(sfn.start_execution(stateMachineArn=arn, name=f"r{round_}")["executionArn"])
            )
            starting.start()
            while starting.is_alive():
                try:
                    statuses = [e["status"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]]
                    assert all(statuses), statuses
                except BaseException as exc:
                    errors.append(exc)
            starting.join()
        for execution in started:
            sfn.stop_execution(executionArn=execution)
        return errors


@contextmanager
def _patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def test_an_execution_listed_while_it_starts_is_seen_running_never_without_a_status() -> None:
    """A suite run beside a CPU hog crashed in list_executions ("'NoneType' object has no attribute 'value'"): moto
    records a new execution before it marks it RUNNING. Listing, describing and starting now take one lock
    (moto_patches.one_start_per_execution_name)."""
    assert _listed_while_starting(patched=True) == []


def test_a_waiting_execution_holds_one_thread_and_a_machine_timeout_still_ends_it() -> None:
    """Local mode must hold as many waiting executions as a batch makes jobs (10,000): moto held two threads for each
    (a program thread and the thread joining it), and a 10,000-line manifest ran out of threads at 8,597 jobs. Each
    waits in one thread now (moto_patches.one_thread_per_execution); a machine's own TimeoutSeconds still ends it."""
    executions = 40
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # type: ignore[call-overload]
        one_thread_per_execution()
        sfn = boto3.client("stepfunctions", region_name=REGION)
        waits = {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 600, "End": True}}}
        machine = sfn.create_state_machine(name="held", definition=json.dumps(waits), roleArn="arn:aws:iam::123456789012:role/held")
        before = threading.active_count()
        started = [
            sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name=f"held-{n}")["executionArn"] for n in range(executions)
        ]
        deadline = time.monotonic() + 120
        waiting: list[str] = []
        while len(waiting) < executions and time.monotonic() < deadline:
            time.sleep(0.05)
            waiting = [
                arn
                for arn in started
                if any(e["type"] == "WaitStateEntered" for e in sfn.get_execution_history(executionArn=arn)["events"])
            ]
        held = threading.active_count() - before
        for arn in started:
            sfn.stop_execution(executionArn=arn)
        timed = dict(waits, TimeoutSeconds=1)
        machine = sfn.create_state_machine(name="timed", definition=json.dumps(timed), roleArn="arn:aws:iam::123456789012:role/timed")
        arn = sfn.start_execution(stateMachineArn=machine["stateMachineArn"])["executionArn"]
        while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = sfn.describe_execution(executionArn=arn)["status"]
    assert len(waiting) == executions
    assert held <= executions + 5, f"{held} threads for {executions} waiting executions"
    assert status == "TIMED_OUT"


def test_a_definition_is_parsed_once_and_its_executions_still_retry_on_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto parsed a machine's definition for every execution, half of local mode's CPU while a large batch started
    its jobs (moto_patches.parse_each_definition_once). Ten executions of one machine at once now share one parse, and
    each still counts its own retries: three tries, then its own failure."""
    import uuid

    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    parse, parses = AmazonStateLanguageParser.parse, []

    def counting(definition: str) -> Any:
        parses.append(definition)
        return parse(definition)

    monkeypatch.setattr(AmazonStateLanguageParser, "parse", staticmethod(counting))
    send = {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage",
        "Parameters": {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/missing", "MessageBody": "x"},
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 1}],
        "End": True,
    }
    definition = {"Comment": str(uuid.uuid4()), "StartAt": "Send", "States": {"Send": send}}
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):  # type: ignore[call-overload]
        parse_each_definition_once()
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machine = sfn.create_state_machine(
            name="shared", definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/shared"
        )
        arns = [sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name=f"e{n}")["executionArn"] for n in range(10)]
        deadline = time.monotonic() + 120
        while any(sfn.describe_execution(executionArn=a)["status"] == "RUNNING" for a in arns) and time.monotonic() < deadline:
            time.sleep(0.1)
        histories = [sfn.get_execution_history(executionArn=a, maxResults=1000)["events"] for a in arns]
    assert len([d for d in parses if definition["Comment"] in d]) == 2  # moto's check of the new machine, then one for all ten
    for events in histories:
        assert sum(e["type"] == "TaskScheduled" for e in events) == 3
        assert events[-1]["type"] == "ExecutionFailed"
