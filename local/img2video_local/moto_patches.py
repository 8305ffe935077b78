"""Local mode's changes to moto, Powertools and the clock, each with its reason.

Where moto, or one process running every function at once, would behave unlike AWS, it is made to behave as AWS
does; each function's docstring says what AWS does and what moto did. LocalPipeline installs each once per process
(a second install changes nothing)."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast


def _under_one_lock(cls: type, names: tuple[str, ...]) -> None:
    """Make these methods of `cls` run one at a time, process-wide (once: a second call changes nothing)."""
    if getattr(getattr(cls, names[0]), "img2video_locked", False):
        return
    lock = threading.RLock()
    for name in names:
        original = getattr(cls, name)

        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        functools.update_wrapper(locked, original)
        locked.img2video_locked = True  # type: ignore[attr-defined]
        setattr(cls, name, locked)


def serialize_dynamodb_requests() -> None:
    """DynamoDB applies each request atomically: a condition is checked and the write made with nothing in between,
    and a transaction is all or nothing. moto runs requests on the callers' threads without a lock, so two handlers
    could both pass `attempts = :previous` (or the daily limit's `n < :limit`). One lock per request restores
    what AWS guarantees; local mode must not be looser than AWS."""
    from moto.dynamodb.responses import DynamoHandler

    _under_one_lock(DynamoHandler, ("call_action",))


def serialize_sqs_requests() -> None:
    """SQS is a service: a receive, a delete and a visibility change on one queue never see each other half done. moto
    keeps a queue's in-flight messages in a set that its receive iterates while another thread's delete changes it
    ("Set changed size during iteration"): the exception killed the thread polling the queue for its function, and
    every upload behind it went unread, no notice ever (a chaos run with half its jobs silent, on a busy machine). One
    lock per request makes each one whole, as on AWS; no request waits inside moto (every receive is short-polled)."""
    from moto.sqs.responses import SQSResponse

    _under_one_lock(SQSResponse, ("call_action",))


def dynamodb_transactions_copy_only_their_items() -> None:
    """A transaction is all or nothing, and moto keeps it so by deep-copying every table it names before it writes,
    to put the copy back if one part fails. The jobs table holds an item per job and attempt (30,000 for a 10,000-line
    manifest), and every job's attempt and submission is a transaction: each copied the whole table under the
    DynamoDB lock, and accepting a large manifest grew quadratic, with hundreds of threads queued on that lock. Here
    moto's own transaction runs unchanged, but its "copy of a table" is a copy of the items the transaction names,
    put back in place if it fails: the same all or nothing, at the cost of the transaction's own items."""
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend.transact_write_items, "img2video_fast_path", False):
        return
    copying_whole_tables = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if any(table.stream_shard is not None for table in self.tables.values()):  # a stream's records: moto's way
            copying_whole_tables(self, transact_items)
            return
        setattr(models, "copy", _CopyingTouchedItems(_transaction_keys(self.tables, transact_items)))  # noqa: B010
        try:
            copying_whole_tables(self, transact_items)
        finally:
            setattr(models, "copy", copy)  # noqa: B010
            for name, table in list(self.tables.items()):
                if isinstance(table, _TouchedItems):  # moto put its "copy" back: the touched items go back in the table
                    table.put_back()
                    self.tables[name] = table.table

    transact_write_items.img2video_fast_path = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _transaction_keys(tables: dict[str, Any], transact_items: list[dict[str, Any]]) -> dict[str, list[tuple[Any, Any]]]:
    """The keys a transaction names, by table, as moto keys its items (a part moto refuses before writing is left out)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    keys: dict[str, list[tuple[Any, Any]]] = {}
    for part in transact_items:
        for operation in part.values():
            table = tables.get(str(operation.get("TableName"))) if isinstance(operation, dict) else None
            key = (operation.get("Key") or operation.get("Item") or {}) if table is not None else {}
            if table is None or table.hash_key_attr not in key:
                continue
            range_value = key.get(table.range_key_attr) if table.range_key_attr else None
            keys.setdefault(table.name, []).append(
                (DynamoType(key[table.hash_key_attr]), DynamoType(range_value) if range_value is not None else None)
            )
    return keys


class _TouchedItems:
    """What moto's transaction keeps as its copy of `table`: the items it names, as they were."""

    def __init__(self, table: Any, keys: list[tuple[Any, Any]]) -> None:
        self.table = table
        self.saved = [
            (hash_value, range_value, copy.deepcopy(_stored_item(table, hash_value, range_value))) for hash_value, range_value in keys
        ]

    def put_back(self) -> None:
        for hash_value, range_value, item in reversed(self.saved):
            _store_item(self.table, hash_value, range_value, item)


class _CopyingTouchedItems:
    """The `copy` module as moto's transaction sees it: a table's deep copy is the items the transaction touches."""

    def __init__(self, keys: dict[str, list[tuple[Any, Any]]]) -> None:
        self.keys = keys

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        from moto.dynamodb.models.table import Table

        if isinstance(value, Table):
            return _TouchedItems(value, self.keys.get(value.name, []))
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _stored_item(table: Any, hash_value: Any, range_value: Any) -> Any:
    if table.range_key_attr:
        return table.items.get(hash_value, {}).get(range_value)
    return table.items.get(hash_value)


def _store_item(table: Any, hash_value: Any, range_value: Any, item: Any) -> None:
    """Put `item` at its key in moto's table, or remove what is there when it is None."""
    if table.range_key_attr:
        if item is not None:
            table.items[hash_value][range_value] = item
        elif hash_value in table.items:
            table.items[hash_value].pop(range_value, None)
    elif item is not None:
        table.items[hash_value] = item
    else:
        table.items.pop(hash_value, None)


def one_start_per_execution_name() -> None:
    """StartExecution is idempotent per name: while an execution runs, a second start with its name and input returns
    that same execution. moto looks the name up, then records the new execution, with nothing held in between: two
    starts at once both missed each other and ran two executions of one job (Accept takes an image's and its
    sidecar's events at once; a suite run beside a CPU hog listed one job twice). One lock per start makes the
    look-up and the record one step, as on AWS.

    Listing and describing take the same lock: moto records a new execution before it marks it RUNNING, and a list
    in between answered with a crash ("'NoneType' object has no attribute 'value'"; a suite run beside a CPU hog).
    On AWS an execution is never seen without a status."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    _under_one_lock(StepFunctionsParserBackend, ("start_execution", "list_executions", "describe_execution"))


def one_metrics_flush_at_a_time() -> None:
    """Lambda runs one invocation per process at a time; local mode runs many at once in one process, where they share
    Powertools' metric set. One invocation's flush could then find the set non-empty, see another flush empty it, and
    raise "Must contain at least one metric" after its handler had succeeded (a stored video reported INTERNAL, seen in a
    200-job chaos run). Adding, serializing and flushing metrics take one lock, so each flush is whole, as on AWS."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    methods = ("flush_metrics", "add_metric", "add_dimension", "add_metadata", "serialize_metric_set", "clear_metrics")
    _under_one_lock(AmazonCloudWatchEMFProvider, methods)


def one_log_line_at_a_time() -> None:
    """The same for Powertools' log formatter: one invocation's append_keys could change the keys while another's log
    line was being formatted ("dictionary changed size during iteration", the line lost; seen in a 500-job burst)."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    _under_one_lock(LambdaPowertoolsFormatter, ("format", "append_keys", "remove_keys", "clear_state"))


_QUEUE_COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessagesNotVisible")


def _as_moto_answers(attributes: dict[str, Any]) -> dict[str, Any]:
    """A queue's attribute values as moto answers them: booleans as "true" and "false"."""
    return {name: str(value).lower() if isinstance(value, bool) else value for name, value in attributes.items()}


def sqs_named_attributes_in_constant_time() -> None:
    """GetQueueAttributes for a few named attributes computes every attribute in moto, three of which count the
    queue's messages. moto asks for one itself for each message it hands out (its retention check: a receive from a
    queue of n messages cost O(n) per message, most of a 500-job burst's CPU), and local mode on each large
    SendMessage (aws_faults checks the queue's MaximumMessageSize, as SQS does): with thousands of jobs waiting in the
    SubmitQueue (a 10,000-line manifest), each send cost O(n) under the SQS lock, and the threads queued behind it
    made accepting the manifest quadratic. Named attributes that count nothing are read one by one, with moto's own
    formatting; any other request is moto's."""
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue, SQSBackend

    if getattr(SQSBackend.get_queue_attributes, "img2video_fast_path", False):
        return
    plain = set(Queue.BASE_ATTRIBUTES) - set(_QUEUE_COUNTS) - {"Policy", "RedrivePolicy"}
    all_of_them = SQSBackend.get_queue_attributes

    def get_queue_attributes(self: Any, queue_name: str, attribute_names: list[str]) -> dict[str, Any]:
        if not attribute_names or not set(attribute_names) <= plain:
            return all_of_them(self, queue_name, attribute_names)
        queue = self.get_queue(queue_name)
        found = {name: getattr(queue, camelcase_to_underscores(name)) for name in attribute_names}
        return _as_moto_answers({name: value for name, value in found.items() if value is not None})

    get_queue_attributes.img2video_fast_path = True  # type: ignore[attr-defined]
    SQSBackend.get_queue_attributes = get_queue_attributes  # type: ignore[method-assign]


def sqs_queue_attributes_count_in_one_pass() -> None:
    """moto computes every attribute of a queue on each SendMessage (to see whether a FIFO queue deduplicates by
    content), and counts its messages three times over to do it, reading the clock for each message each time: with
    thousands of jobs waiting in the SubmitQueue, each job's send cost that much. The three counts are made here in
    one pass at one instant, the same answer (moto's own differ by the instants its passes read); the attributes are
    moto's otherwise."""
    import json

    from moto.core.utils import camelcase_to_underscores, unix_time_millis
    from moto.sqs.models import Queue

    if getattr(Queue.attributes.fget, "img2video_one_pass", False):  # type: ignore[attr-defined]
        return

    def counts(queue: Any) -> dict[str, int]:
        now, visible, delayed, in_flight = unix_time_millis(), 0, 0, 0
        for message in queue._messages:
            is_delayed, is_visible = now < message.delayed_until, now > message.visible_at
            visible += is_visible and not is_delayed
            delayed += is_delayed
            in_flight += not is_visible
        return dict(zip(_QUEUE_COUNTS, (visible, delayed, in_flight), strict=True))

    def attributes(self: Any) -> dict[str, Any]:
        counted = counts(self)
        names = [
            *self.BASE_ATTRIBUTES,
            *(self.FIFO_ATTRIBUTES if self.fifo_queue else []),
            *(self.KMS_ATTRIBUTES if self.kms_master_key_id else []),
        ]
        result = {name: counted[name] if name in counted else getattr(self, camelcase_to_underscores(name)) for name in names}
        if self.policy:
            result["Policy"] = self.policy
        if self.redrive_policy:
            result["RedrivePolicy"] = json.dumps(self.redrive_policy)
        return _as_moto_answers(result)

    attributes.img2video_one_pass = True  # type: ignore[attr-defined]
    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]


def keep_task_failure_causes() -> None:
    """SendTaskFailure's `cause` reaches the state's Catch on AWS; moto's API layer drops it (its interpreter keeps
    it), so a Submit failure's message (an insufficient balance, the daily limit) would reach the notice as a bare
    error name. Pass it on, as AWS does."""
    from moto.stepfunctions.responses import StepFunctionResponse

    if getattr(StepFunctionResponse.send_task_failure, "img2video_keeps_cause", False):
        return

    def send_task_failure(self: Any) -> Any:
        from moto.core.responses import EmptyResult

        backend: Any = self.stepfunction_backend
        token, error = self._get_param("taskToken"), self._get_param("error")
        if "cause" in inspect.signature(backend.send_task_failure).parameters:  # the interpreter's backend
            backend.send_task_failure(token, error=error, cause=self._get_param("cause"))
        else:
            backend.send_task_failure(token, error=error)
        return EmptyResult()

    send_task_failure.img2video_keeps_cause = True  # type: ignore[attr-defined]
    StepFunctionResponse.send_task_failure = send_task_failure  # type: ignore[method-assign]


def lambda_service_errors_keep_their_names() -> None:
    """Step Functions names an error of the Lambda service itself (not of the handler) Lambda.<exception>:
    Lambda.TooManyRequestsException for a throttled invocation, Lambda.AWSLambdaException for the others. moto's
    interpreter names every one "Exception", which no Retry lists: a throttled step would fail its job at once."""
    from botocore.exceptions import ClientError
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda import StateTaskLambda

    original = StateTaskLambda._from_error
    if getattr(original, "img2video_named", False):
        return

    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        event = original(self, env, ex)
        if isinstance(ex, ClientError):
            code = ex.response.get("Error", {}).get("Code", "")
            name = f"Lambda.{code}" if code in ("TooManyRequestsException", "ServiceException") else "Lambda.AWSLambdaException"
            event.error_name = CustomErrorName(name)  # type: ignore[misc]  # Final in moto; set once, before anyone reads it
            details: Any = event.event_details or {}
            if details.get("lambdaFunctionFailedEventDetails") is not None:
                details["lambdaFunctionFailedEventDetails"]["error"] = name
        return event

    from_error.img2video_named = True  # type: ignore[attr-defined]
    StateTaskLambda._from_error = from_error  # type: ignore[method-assign]


def stopped_executions_stay_aborted() -> None:
    """StopExecution ends an execution at once on AWS: ABORTED, whatever state it was in. moto's interpreter, stopped
    while a callback task waits (WaitForWebhook, SubmitJob), sees the wait end as a timeout, and an uncaught error
    then overwrites the stop: the execution ends FAILED and the backstop sends INTERNAL instead of CANCELLED. A
    stopped program stays stopped here, as on AWS."""
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped

    if getattr(Environment.set_error, "img2video_keeps_stop", False):
        return
    set_error, set_timed_out = Environment.set_error, Environment.set_timed_out

    def keep_stop(original: Callable[..., None]) -> Callable[..., None]:
        def patched(self: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(self.program_state(), ProgramStopped):
                return
            original(self, *args, **kwargs)

        patched.img2video_keeps_stop = True  # type: ignore[attr-defined]
        return patched

    Environment.set_error = keep_stop(set_error)  # type: ignore[method-assign]
    Environment.set_timed_out = keep_stop(set_timed_out)  # type: ignore[method-assign]


def one_thread_per_execution() -> None:
    """moto's interpreter runs every program (an execution's, a Map iteration's) in a thread of its own and joins it
    from the thread that started it, to stop waiting at the machine's TimeoutSeconds. Without one (our machines have
    none) the join only doubles the threads each waiting execution holds: 10,000 jobs held by the daily limit took
    20,000, past this machine's limits (pid_max 32,768 counts threads, vm.max_map_count 65,530 counts their stacks),
    and local mode refused new threads at 8,597 jobs, where AWS holds any number. A program without a timeout is
    evaluated in the thread that starts it; one with a timeout keeps moto's way."""
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
    from moto.stepfunctions.parser.asl.component.program.program import Program

    if getattr(Program.eval, "img2video_one_thread", False):
        return
    with_timeout = Program.eval

    def evaluate(self: Any, env: Any) -> None:
        if self.timeout_seconds is not None:
            with_timeout(self, env)
            return
        env.next_state_name = self.start_at.start_at_name
        EvalComponent.eval(self, env)

    evaluate.img2video_one_thread = True  # type: ignore[attr-defined]
    Program.eval = evaluate  # type: ignore[method-assign]


def parse_each_definition_once() -> None:
    """moto parses a state machine's definition (ANTLR, in pure Python) again for every execution it starts: half of
    local mode's CPU while a 10,000-line manifest started its jobs, all of one definition. Each definition is parsed
    once here and its program shared, as moto already shares one program among a Map's iterations running at once:
    what an execution changes lives in its own environment. The one value a component sets for itself (the key of
    its retry counters in that environment) is set before the program is shared, so no two executions race for it."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    if getattr(ExecutionWorker._get_evaluation_entrypoint, "img2video_parsed_once", False):
        return

    parsing = threading.Lock()  # executions started at once wait for the one parse

    @functools.lru_cache(maxsize=64)
    def program_of(definition: str) -> Any:
        program = AmazonStateLanguageParser.parse(definition)[0]
        _settle_heap_keys(program)
        return program

    def entrypoint(self: Any) -> Any:
        with parsing:
            return program_of(self._evaluation_details.state_machine_details.definition)

    entrypoint.img2video_parsed_once = True  # type: ignore[attr-defined]
    ExecutionWorker._get_evaluation_entrypoint = entrypoint  # type: ignore[method-assign]


def _settle_heap_keys(program: Any) -> None:
    """Every component of a parsed program takes its heap key now (moto draws one the first time it is asked)."""
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent

    seen: set[int] = set()
    todo = [program]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, EvalComponent):
            _ = node.heap_key
        if isinstance(node, (list, tuple, set, frozenset)):
            todo.extend(node)
        elif isinstance(node, dict):
            todo.extend(node.values())
        elif type(node).__module__.startswith("moto.stepfunctions.parser.asl") and hasattr(node, "__dict__"):
            todo.extend(vars(node).values())


def _skip_moto_backend_lock_when_known() -> None:
    """moto takes one global lock on every request just to check that the account's backend exists; under a
    burst every handler thread queues on it (py-spy: a third of a 60-job burst). Skip it once the backend is there."""
    from moto.core.base_backend import BackendDict

    original = BackendDict._create_account_specific_backend
    if getattr(original, "img2video_fast_path", False):
        return

    def create(self: Any, account_id: str) -> None:
        if dict.__contains__(self, account_id) and self in BackendDict._instances:  # type: ignore[misc]
            return
        original(self, account_id)

    create.img2video_fast_path = True  # type: ignore[attr-defined]
    BackendDict._create_account_specific_backend = create  # type: ignore[method-assign]


class _StateDurations:
    scale = 1.0


_state_durations = _StateDurations()


def scale_state_durations(scale: float) -> None:
    """Wait states (Seconds, SecondsPath, Timestamp) and every TimeoutSeconds (a Task's, a callback wait's) shrink by
    the time scale, as function timeouts and Retry backoff do: a test of a state timing out takes a fraction of its
    real time, in proportion with everything else. moto waits in whole seconds and would loop forever on a fraction,
    so the Wait is replaced by a deadline wait that gives up when the execution stops, as moto's does."""
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import Timeout
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    _state_durations.scale = scale
    if getattr(WaitFunction._wait_interval, "img2video_scaled", False):
        return

    def wait_interval(self: Any, env: Any, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds * _state_durations.scale
        while env.is_running() and (left := deadline - time.monotonic()) > 0:
            env.program_state_event.wait(left)

    def timeout_body(self: Any, env: Any) -> None:
        seconds = self._eval_seconds(env=env)
        env.stack.append(seconds * _state_durations.scale if _state_durations.scale != 1 else seconds)

    wait_interval.img2video_scaled = True  # type: ignore[attr-defined]
    WaitFunction._wait_interval = wait_interval  # type: ignore[method-assign]
    Timeout._eval_body = timeout_body  # type: ignore[method-assign]


class _ScaledTime:
    """`time` for moto's retrier: sleeps shrink by the time scale and end when the pipeline stops (its executions are
    stopped then, and must not sleep on into the next pipeline); everything else is the real module."""

    def __init__(self, scale: float, stop: threading.Event) -> None:
        self._scale, self._stop = scale, stop

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds * self._scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# The reason S3 gives in an EventBridge event, by the notification's event name (S3's documented examples).
_S3_EVENTBRIDGE_REASONS = {
    "s3:ObjectCreated:Put": "PutObject",
    "s3:ObjectCreated:Post": "PostObject",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
}


def s3_eventbridge_events_as_s3_sends_them() -> None:
    """A bucket with EventBridge on sends "Object Created" to the account's default bus, in the shape S3 documents
    (docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html): `etag`, `reason` the API call (PutObject,
    CompleteMultipartUpload). moto sent `eTag`, `reason` "ObjectCreated", other S3 events too, and to every bus.
    The key stays as stored, not URL-encoded (S3 notifications encode theirs; EventBridge events do not)."""
    import moto.s3.notifications as notifications

    if getattr(notifications._send_event_bridge_message, "img2video_patched", False):
        return

    def send(account_id: str, bucket: Any, event_name: str, key: Any) -> None:
        from moto.events.models import events_backends

        event_name = str(getattr(event_name, "value", event_name))  # moto passes its enum
        if not event_name.startswith("s3:ObjectCreated"):
            return  # only uploads start jobs; other S3 events reach no rule of this stack
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": account_id,
            "time": time.time(),  # moto keeps it as Unix time and writes it in ISO 8601 on delivery, as AWS's events have it
            "region": bucket.region_name,
            "resources": [f"arn:aws:s3:::{bucket.name}"],
            "detail": {
                "version": "0",
                "bucket": {"name": bucket.name},
                "object": {"key": key.name, "size": key.size, "etag": key.etag.strip('"'), "sequencer": "617f08299329d189"},
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": account_id,
                "source-ip-address": "127.0.0.1",
                "reason": _S3_EVENTBRIDGE_REASONS.get(event_name, "PutObject"),
            },
        }
        default_bus = events_backends[account_id][bucket.region_name].event_buses.get("default")
        for rule in list(default_bus.rules.values()) if default_bus else []:
            with contextlib.suppress(Exception):  # asynchronous on AWS: a failed delivery never fails the upload
                rule.send_to_targets(cast(Any, event), transform_input=False)

    send.img2video_patched = True  # type: ignore[attr-defined]
    notifications._send_event_bridge_message = send


def s3_notification_configuration_shows_eventbridge() -> None:
    """GetBucketNotificationConfiguration answers `EventBridgeConfiguration: {}` when EventBridge is on for the bucket
    (S3's API reference); moto left it out, so a read-modify-write (connect-bucket) could never see it was on."""
    from moto.core.common_types import TYPE_RESPONSE
    from moto.s3.responses import S3Response

    original = S3Response.get_bucket_notification
    if getattr(original, "img2video_patched", False):
        return

    def get_bucket_notification(self: Any) -> TYPE_RESPONSE:
        configuration = self.backend.get_bucket_notification_configuration(self.bucket_name)
        if configuration is None or configuration.event_bridge is None:
            return original(self)
        from moto.core.responses import ActionResult  # the same serializer moto's own answer uses

        answer: dict[str, Any] = {"EventBridgeConfiguration": {}}
        for field, items, arn_key in (
            ("TopicConfigurations", configuration.topic, "TopicArn"),
            ("QueueConfigurations", configuration.queue, "QueueArn"),
            ("LambdaFunctionConfigurations", configuration.cloud_function, "LambdaFunctionArn"),
        ):
            answer[field] = [
                {
                    "Id": item.id,
                    arn_key: item.arn,
                    "Events": item.events,
                    **({"Filter": {"Key": {"FilterRules": item.filters["S3Key"]["FilterRule"]}}} if item.filters else {}),
                }
                for item in items
            ]
        self.data["Action"] = "GetBucketNotificationConfiguration"
        return cast(TYPE_RESPONSE, self.serialized(ActionResult(answer)))

    get_bucket_notification.img2video_patched = True  # type: ignore[attr-defined]
    S3Response.get_bucket_notification = get_bucket_notification  # type: ignore[method-assign]


def state_machine_calls_name_their_role() -> None:
    """AWS makes a state machine's service calls (a Lambda invoke, a Distributed Map's ItemReader) with that state
    machine's role. moto signs every state machine's calls with the same keys: each client it makes now carries the
    role of the execution that made it, so local IAM checks the calls of each of the stack's state machines against
    its own role."""
    import sys

    import moto.stepfunctions.parser.asl.parse.preprocessor  # noqa: F401  # every component that makes a client
    import moto.stepfunctions.parser.asl.utils.boto_client as boto_client

    original = boto_client.boto_client_for
    if getattr(original, "img2video_patched", False):
        return

    def with_role(region: str, service: str, state_credentials: Any = None) -> Any:
        made = original(region, service, state_credentials)
        made.img2video_role_arn = getattr(state_credentials, "role_arn", "") or ""
        return made

    with_role.img2video_patched = True  # type: ignore[attr-defined]
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("moto.stepfunctions.parser") and getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = with_role  # type: ignore[attr-defined]


def distributed_maps_fail_past_their_tolerated_failures() -> None:
    """AWS fails a Distributed Map run (States.ExceedToleratedFailureThreshold) once more of its child executions failed
    than ToleratedFailureCount / ToleratedFailurePercentage allow (0 by default: any). moto counted a failed child and
    reported the run as succeeded: the Map's Catch was never taken."""
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent, FailureEventException
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original = DistributedIterationComponent._map_run
    if getattr(original, "img2video_patched", False):
        return

    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        original(self, env, eval_input)
        counter = eval_input.map_run_record.item_counter
        failed, total = counter.failed.get() + counter.timed_out.get(), counter.total.get()
        count = eval_input.tolerated_failure_count or 0
        percentage = eval_input.tolerated_failure_percentage or 0
        if failed > count and (not total or failed * 100 / total > percentage):
            name = StatesErrorNameType.StatesExceedToleratedFailureThreshold
            cause = f"The specified tolerated failure threshold was exceeded: {failed} of {total} items failed"
            raise FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=name),
                    event_type=HistoryEventType.ExecutionFailed,
                    # moto's TypedDict is total, and moto itself passes one key
                    event_details=EventDetails(executionFailedEventDetails=ExecutionFailedEventDetails(error=name.to_name(), cause=cause)),  # type: ignore[typeddict-item]
                )
            )

    map_run.img2video_patched = True  # type: ignore[attr-defined]
    DistributedIterationComponent._map_run = map_run  # type: ignore[method-assign]
