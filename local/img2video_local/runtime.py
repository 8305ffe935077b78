"""The embedded runtime: moto runs the template's stack and the real ASL; the real handlers do the work."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_plus

import boto3
from moto import mock_aws

from img2video_local import doorbell, iam
from img2video_local.aws_faults import AwsFaults, enforce_iam, sample_short_polls, stop_enforcing_iam
from img2video_local.doorbell import EXECUTION_ENDED, IDLE_LOOK_SECONDS, SQS_NEWS
from img2video_local.emulator import EmulatorConfig, NovitaEmulator
from img2video_local.event_sources import DEFAULT_CONCURRENCY, SqsPoller, SqsSource
from img2video_local.eventbridge import ExecutionStatusEvents
from img2video_local.lambda_server import FunctionUrls, LocalFunctions, not_a_lambda, start_invoke_server
from img2video_local.moto_patches import (
    _ScaledTime,
    _skip_moto_backend_lock_when_known,
    _state_durations,
    distributed_maps_fail_past_their_tolerated_failures,
    dynamodb_transactions_copy_only_their_items,
    keep_task_failure_causes,
    lambda_service_errors_keep_their_names,
    one_log_line_at_a_time,
    one_metrics_flush_at_a_time,
    one_start_per_execution_name,
    one_thread_per_execution,
    parse_each_definition_once,
    s3_eventbridge_events_as_s3_sends_them,
    s3_notification_configuration_shows_eventbridge,
    scale_state_durations,
    serialize_dynamodb_requests,
    serialize_sqs_requests,
    sqs_named_attributes_in_constant_time,
    sqs_queue_attributes_count_in_one_pass,
    state_machine_calls_name_their_role,
    stopped_executions_stay_aborted,
)
from img2video_local.stack import LocalStack, provision
from img2video_local.template import REGION, TEMPLATE_PATH, Template

# Template parameters overridden for a quick local run. Every other setting is the template's default.
LOCAL_PARAMETERS = {
    "PollMinSeconds": "1",
    "PollMaxSeconds": "5",
    "PollMaxSecondsOffPeak": "10",
    "SidecarGraceSeconds": "3",
    "MaxWaitMinutes": "2",
    "MaxWaitMinutesOffPeak": "5",
    "PresignExpirySeconds": "900",
}
MOTO_CONFIG = {
    "stepfunctions": {"execute_state_machine": True},
    "core": {"passthrough": {"services": ["lambda"]}},
}
# How soon the local SQS poller retries a record the Submit function reported as failed.
LOCAL_RETRY_VISIBILITY_SECONDS = 2

ProgressHook = Callable[[str, str, dict[str, Any]], None]  # (image key, stage, details)


@dataclass
class Received:
    notice: dict[str, Any]
    attributes: dict[str, str]
    subject: str


@dataclass
class LocalPipeline:
    """Use as a context manager: `with LocalPipeline() as p: p.upload(...); p.wait_for_notices(...)`."""

    parameters: dict[str, str] = field(default_factory=dict)
    emulator_config: EmulatorConfig = field(default_factory=EmulatorConfig)
    on_progress: ProgressHook | None = None
    log_file: Path | None = None
    # AWS's own faults, injected into the handlers' boto3 calls (see aws_faults.py for the spec).
    aws_faults: str = ""
    aws_faults_seed: int | None = None
    # Shrinks every function timeout, the state machine's Retry backoff, Wait states and TimeoutSeconds in proportion
    # (the emulator's durations have a time_scale of their own, in its config).
    time_scale: float = 1.0
    # Each function's MemorySize, enforced by tracemalloc (which taxes every allocation about 3x). Only a benchmark of
    # scheduling turns it off (bench/burst.py); tests and `make demo` never do.
    memory_limits: bool = True
    # The cap of a throttled submit's backoff: 4 s keeps tests of throttling short; None leaves the deployed default
    # (900 s), for a benchmark that must wait as AWS would (bench/burst.py).
    submit_retry_max_seconds: int | None = 4
    # The real model instead of the emulator: Novita's API (or whatever stands in for it) and the user's own key.
    # Images go inline (Novita cannot fetch from this machine) and the template's own poll and wait parameters apply.
    provider_url: str | None = None
    provider_api_key: str | None = None
    # The account's Lambda concurrency quota (None: unlimited). A new account may have 10; invocations beyond it are
    # refused with TooManyRequestsException, which the state machine sees as Lambda.TooManyRequestsException.
    account_concurrency: int | None = None
    # Concurrency limits of single functions, as ReservedConcurrentExecutions sets them (the template's own are applied)
    function_concurrency: dict[str, int] = field(default_factory=dict)
    # How often a function's short poll of SQS answers with nothing while messages wait, as SQS's sampling does (moto
    # never does): the functions must long-poll where an empty answer matters.
    sqs_short_poll_empty: float = 0.5
    # Another template than the repository's (a test of what local mode refuses or denies)
    template_path: Path | None = None
    # The functions' environment beyond what the template's parameters allow (they are checked as CloudFormation checks
    # them): a test's shortcut, e.g. MAX_WAIT_MINUTES under a minute for a task that never finishes.
    environment: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.emulator = NovitaEmulator(self.emulator_config)
        self.notices: list[Received] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self._known_executions: set[str] = set()
        self._log_handle: IO[str] | None = None
        self._saved_streams: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.event_keys: list[tuple[str, str]] = []  # (bucket, key) of every S3 event the Submit queue delivered

    # -- start and stop --------------------------------------------------------------------------
    def __enter__(self) -> LocalPipeline:
        self._set_env(
            {
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_SESSION_TOKEN": "local",
            }
        )
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
            self._set_env({name: None})
        _skip_moto_backend_lock_when_known()
        serialize_dynamodb_requests()
        dynamodb_transactions_copy_only_their_items()
        serialize_sqs_requests()
        one_start_per_execution_name()
        doorbell.install()
        keep_task_failure_causes()
        lambda_service_errors_keep_their_names()
        stopped_executions_stay_aborted()
        one_thread_per_execution()
        parse_each_definition_once()
        state_machine_calls_name_their_role()
        distributed_maps_fail_past_their_tolerated_failures()
        one_metrics_flush_at_a_time()
        one_log_line_at_a_time()
        sqs_named_attributes_in_constant_time()
        sqs_queue_attributes_count_in_one_pass()
        s3_eventbridge_events_as_s3_sends_them()
        s3_notification_configuration_shows_eventbridge()
        self._mock = mock_aws(config=MOTO_CONFIG)  # type: ignore[call-overload]  # moto's TypedDict is stricter than its docs
        self._mock.start()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        base_url = self.emulator.start()
        if self.provider_url:
            # Novita cannot reach this machine: images go inline, and no webhook is asked for (its URL would be a loopback one)
            overrides = {"ImageTransport": "data", "Webhook": "off", **self.parameters}
        else:
            overrides = {**LOCAL_PARAMETERS, **self.parameters}
        template = Template.load(overrides, self.template_path or TEMPLATE_PATH)
        self.function_urls = FunctionUrls()
        self.stack: LocalStack = provision(template, self.provider_api_key or self.emulator_config.api_key, self.function_urls.serve)
        self._set_env(
            {
                **self.stack.environment,
                "ALLOW_LOOPBACK_HTTP": "true",  # local only: the emulator serves videos over loopback http
                # local only: the emulator (or the given provider) on loopback http, which NovitaBaseUrl's pattern refuses
                "NOVITA_BASE_URL": self.provider_url or base_url,
                # local only: re-try throttled submits within seconds
                "SUBMIT_RETRY_MAX_SECONDS": None if self.submit_retry_max_seconds is None else str(self.submit_retry_max_seconds),
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_DEV": "false",
                **self.environment,
            }
        )
        self._route_logs()
        # moto's Step Functions interpreter logs every failed execution as an error; a failed job is an
        # outcome here, reported by its notice.
        logging.getLogger("moto").setLevel(logging.CRITICAL)
        from img2video.aws.clients import reset

        reset()
        self._scale_retry_sleeps()
        self.faults = AwsFaults.parse(self.aws_faults, seed=self.aws_faults_seed)
        self.faults.install()
        enforce_iam(self.stack.policies)  # each function's calls (and the state machine's) only as its role allows
        self._queues_refuse_rules_their_policy_does_not_allow()
        sample_short_polls(self.sqs_short_poll_empty, self.aws_faults_seed)
        self._iam_enforced = True
        self.functions = LocalFunctions(
            self.stack.functions,
            on_invoke=self._observe_invoke,
            time_scale=self.time_scale,
            memory_limits=self.memory_limits,
            account_concurrency=self.account_concurrency,
            function_concurrency=self.function_concurrency,
        )
        self.function_urls.attach(self.functions)
        self._invoke_server, invoke_url = start_invoke_server(self.functions)
        self._set_env({"AWS_ENDPOINT_URL_LAMBDA": invoke_url})
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self._subscribe_notices()
        for source in self._sqs_sources():
            before = self._before_upload_batch if source.function == "AcceptFunction" else None
            poller = SqsPoller(source, self.sqs, self.functions.invoke, self._stop, LOCAL_RETRY_VISIBILITY_SECONDS, before)
            self._spawn(poller.run, f"sqs-{source.function}")
        self.backstop = self._execution_status_events()
        if self.backstop:
            self._spawn(self.backstop.run, "eventbridge")
        self._spawn(self._poll_notices, "notice-collector")

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        SQS_NEWS.ring()  # the pollers waiting for news see the stop at once
        EXECUTION_ENDED.ring()
        if getattr(self, "faults", None) is not None:
            self.faults.uninstall()
        sample_short_polls(0)
        self._stop_executions()
        if getattr(self, "_iam_enforced", False):
            stop_enforcing_iam(self.stack.policies)
            self._iam_enforced = False
        self._stop_serving()
        self._mock.stop()
        self._restore_process()

    def _stop_executions(self) -> None:
        """Every execution still running is stopped, as deleting a stack stops them: none may go on retrying in this
        process after the pipeline is gone and reach the next pipeline's functions (they share its names and ARNs)."""
        if not hasattr(self, "stack"):
            return
        machine = self.stack.id("VideoJobStateMachine")
        try:
            pages = self.sfn.get_paginator("list_executions").paginate(stateMachineArn=machine, statusFilter="RUNNING")
            running = [e["executionArn"] for page in pages for e in page["executions"]]
        except Exception:  # the mock is going away already: nothing can be listed, nothing runs
            running = []
        for arn in running:
            with contextlib.suppress(Exception):
                self.sfn.stop_execution(executionArn=arn, error="PipelineClosed", cause="the local pipeline was closed")

    def _join_execution_threads(self, timeout: float = 30.0) -> None:
        """Wait for moto's interpreter threads to see the stop and end (their Lambda calls now fail at once)."""
        deadline = time.monotonic() + timeout
        for thread in execution_threads():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _stop_serving(self) -> None:
        """The pollers, the function URLs, the functions, the invoke API and the emulator."""
        for thread in self._threads:
            thread.join(timeout=5)
        if hasattr(self, "function_urls"):
            self.function_urls.close()
        if hasattr(self, "functions"):
            self.functions.close()
        if hasattr(self, "_invoke_server"):
            self._invoke_server.shutdown()
            self._invoke_server.server_close()
        self._join_execution_threads()
        self.emulator.stop()

    def _restore_process(self) -> None:
        """The environment, the log streams, stdout and the patched clocks as they were before the pipeline started."""
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for handler, previous in self._saved_streams:
            handler.stream = previous
        if hasattr(self, "_real_stdout"):
            sys.stdout = self._real_stdout
        if self._log_handle:
            self._log_handle.close()
        if hasattr(self, "_saved_retrier_time"):
            from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

            retrier_decl.time = self._saved_retrier_time  # type: ignore[attr-defined]
        _state_durations.scale = 1.0
        from img2video.aws.clients import reset

        reset()

    def _scale_retry_sleeps(self) -> None:
        """The ASL's Retry backoff, shrunk by the time scale like every other duration (moto sleeps for real)."""
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

        self._saved_retrier_time = retrier_decl.time  # type: ignore[attr-defined]
        retrier_decl.time = _ScaledTime(self.time_scale, self._stop)  # type: ignore[attr-defined,assignment]
        scale_state_durations(self.time_scale)

    def _set_env(self, values: dict[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _route_logs(self) -> None:
        """The handlers' JSON logs go to a file (or nowhere), never to the CLI's stdout."""
        from img2video.observability import logger

        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = self.log_file.open("a", encoding="utf-8")
            stream: IO[str] = self._log_handle
        else:
            self._log_handle = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
            stream = self._log_handle
        for handler in logging.getLogger(logger.service).handlers:
            if isinstance(handler, logging.StreamHandler):
                # assigned, not setStream(): that flushes the old stream, which a test runner may have closed
                self._saved_streams.append((handler, handler.stream))
                handler.stream = stream
        # Metrics are printed as EMF JSON lines: those from the handlers' threads go to the log too.
        self._real_stdout = sys.stdout
        sys.stdout = _ThreadRoutedStream(self._real_stdout, stream, threading.get_ident())

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- names ---------------------------------------------------------------------------------
    @property
    def input_bucket(self) -> str:
        return self.stack.environment["INPUT_BUCKET"]  # the stack's own, or the existing one it was given

    @property
    def output_bucket(self) -> str:
        return self.stack.id("OutputBucket")

    @property
    def input_prefix(self) -> str:
        return self.stack.environment["INPUT_PREFIX"]

    # -- what users do ---------------------------------------------------------------------------
    def upload(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        with not_a_lambda():  # a user's upload happens outside AWS Lambda: no invocation is charged for its memory
            self.s3.put_object(Bucket=self.input_bucket, Key=key, Body=data, **extra)
        self._progress(key, "uploaded", {})

    def wait_for_notices(self, source_keys: set[str], timeout: float) -> list[Received]:
        """Block until every key in `source_keys` has a terminal notice (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if source_keys <= {_about(r.notice) for r in list(self.notices)}:
                break
            time.sleep(0.1)
        return [r for r in list(self.notices) if _about(r.notice) in source_keys]

    def download(self, received: Received, out_dir: Path) -> list[Path]:
        """Copy a succeeded job's video and manifest into `out_dir`, keeping its folders."""
        video = received.notice.get("video")
        if not video:
            return []
        paths = []
        for key in (video["key"], video["key"].removesuffix(".mp4") + ".json"):
            target = out_dir / key.removeprefix(self.stack.environment["OUTPUT_PREFIX"])
            target.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(self.output_bucket, key, str(target))
            paths.append(target)
        return paths

    # -- local plumbing ----------------------------------------------------------------------------
    def _subscribe_notices(self) -> None:
        queue_url = self.sqs.create_queue(QueueName="img2video-local-notices")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        boto3.client("sns", region_name=REGION).subscribe(TopicArn=self.stack.id("NoticesTopic"), Protocol="sqs", Endpoint=queue_arn)
        self._notice_queue = queue_url

    def _poll_notices(self) -> None:
        while not self._stop.is_set():
            seen = SQS_NEWS.rings
            answer = self.sqs.receive_message(QueueUrl=self._notice_queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            for message in answer.get("Messages", []):
                envelope = json.loads(message["Body"])
                notice = json.loads(envelope["Message"])
                attributes = {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()}
                self.notices.append(Received(notice=notice, attributes=attributes, subject=envelope.get("Subject", "")))
                self.sqs.delete_message(QueueUrl=self._notice_queue, ReceiptHandle=message["ReceiptHandle"])
                self._progress(_about(notice), "notified", {"event": notice["event"], "error": notice.get("error")})
            if not answer.get("Messages"):
                SQS_NEWS.wait(seen, IDLE_LOOK_SECONDS)  # until a notice may have come (doorbell.py)

    # -- the template's event sources ------------------------------------------------------------
    def _sqs_sources(self) -> list[SqsSource]:
        sources = []
        for logical, spec in self.stack.functions.items():
            for event in spec.events.values():
                if event.get("Type") != "SQS":
                    continue
                props = event["Properties"]
                queue = props["Queue"]["Fn::GetAtt"][0]
                limit = self.stack.template.resolve(props.get("ScalingConfig", {}).get("MaximumConcurrency", DEFAULT_CONCURRENCY))
                sources.append(SqsSource(logical, self.stack.id(queue), self.stack.arn(queue), int(props.get("BatchSize", 10)), int(limit)))
        return sources

    def _execution_status_events(self) -> ExecutionStatusEvents | None:
        for logical, spec in self.stack.functions.items():
            for event in spec.events.values():
                if event.get("Type") != "EventBridgeRule":
                    continue
                statuses = event["Properties"]["Pattern"]["detail"]["status"]
                return ExecutionStatusEvents(
                    self.sfn,
                    self.stack.id("VideoJobStateMachine"),
                    statuses,
                    deliver=self._rule_target(logical, functools.partial(self.functions.invoke, logical)),
                    on_failure=functools.partial(self._backstop_failed, logical),
                    stop=self._stop,
                    retry_delay=max(0.05, self.time_scale),
                )
        return None

    def _rule_target(self, function: str, invoke: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
        """EventBridge invokes a rule's target only as the function's resource-based permission allows: without one,
        every delivery is refused (and the event lost after the rule's retries), as on AWS."""
        resources = self.stack.template.translated["Resources"]
        for logical, resource in resources.items():
            if resource["Type"] != "AWS::Events::Rule" or logical not in self.stack.template.arns:
                continue
            for target in resource["Properties"].get("Targets", []):
                arn = str(self.stack.template.resolve(target["Arn"]))
                if ":lambda:" not in arn or arn.split(":")[6] != self.stack.functions[function].name:
                    continue
                rule_arn = self.stack.arn(logical)
                if iam.service_may_invoke(resources, self.stack.template.resolve, "events.amazonaws.com", arn, rule_arn):
                    return invoke
                message = f"events.amazonaws.com is not authorized to invoke {arn} for {rule_arn}: no AWS::Lambda::Permission allows it"

                def refused(event: dict[str, Any], message: str = message) -> Any:
                    raise PermissionError(message)

                return refused
        return invoke

    def _queues_refuse_rules_their_policy_does_not_allow(self) -> None:
        """EventBridge delivers to a queue only as the queue's policy allows events.amazonaws.com for that rule; without
        it every delivery fails (and the event is dropped after the rule's retries), as on AWS."""
        events = boto3.client("events", region_name=REGION)
        for logical, resource in self.stack.template.translated["Resources"].items():
            if resource["Type"] != "AWS::Events::Rule" or logical not in self.stack.template.arns:
                continue
            for target in resource["Properties"].get("Targets", []):
                arn = str(self.stack.template.resolve(target["Arn"]))
                if ":sqs:" in arn and not self.stack.policies.service_may(
                    "events.amazonaws.com", "sqs:SendMessage", arn, self.stack.arn(logical)
                ):
                    logging.getLogger(__name__).warning(
                        "EventBridge may not send to %s for %s: no queue policy allows it; its events are dropped", arn, logical
                    )
                    events.remove_targets(Rule=self.stack.id(logical), Ids=[target["Id"]])

    def _backstop_failed(self, function: str, event: dict[str, Any], error: BaseException) -> None:
        """Lambda's on-failure destination: the event and the error, kept on the BackstopFailureQueue. Lambda sends it
        with the function's own role (SAM grants it), so local mode does too."""
        body = {"requestPayload": event, "responsePayload": {"errorType": type(error).__name__, "errorMessage": str(error)}}
        with iam.acting_as(function):
            self.sqs.send_message(QueueUrl=self.stack.id("BackstopFailureQueue"), MessageBody=json.dumps(body))

    def _before_upload_batch(self, source: SqsSource, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            self._maybe_duplicate(source.queue_url, message)
            self._record_event_keys(message["Body"])

    def _record_event_keys(self, body: str) -> None:
        data = json.loads(body)
        for record in data.get("Records", []) if isinstance(data, dict) else []:
            if record.get("eventSource") == "aws:s3":
                self.event_keys.append((record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])))

    def _maybe_duplicate(self, queue_url: str, message: dict[str, Any]) -> None:
        """Fault injection: S3 delivers some events twice."""
        is_s3_event = '"aws:s3"' in message["Body"]
        is_copy = "img2video-duplicate" in message.get("MessageAttributes", {})
        if is_s3_event and not is_copy and self.emulator.chance(self.emulator.config.faults.dup):
            self.sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=message["Body"],
                MessageAttributes={"img2video-duplicate": {"DataType": "String", "StringValue": "1"}},
            )

    def _observe_invoke(self, function: str, event: dict[str, Any], result: Any, error: BaseException | None) -> None:
        if function == "AcceptFunction":
            self._report_new_executions()
            return
        if function == "SubmitFunction":
            for record in event.get("Records", []):
                job = json.loads(record["body"]).get("job", {})
                self._progress(job.get("source", {}).get("key", ""), "submitted", {"job_id": job.get("job_id")})
            return
        key = event.get("job", {}).get("source", {}).get("key", "")
        if function == "PollFunction" and result:
            self._progress(key, "polling", {"progress": result.get("progress_percent", 0), "status": result.get("status")})
        elif function == "StoreFunction":
            self._progress(key, "stored" if result else "storing", {"error": type(error).__name__ if error else None})

    def _report_new_executions(self) -> None:
        if self.on_progress is None:
            return
        paginator = self.sfn.get_paginator("list_executions")
        for page in paginator.paginate(stateMachineArn=self.stack.id("VideoJobStateMachine")):
            for execution in page["executions"]:
                if execution["name"] in self._known_executions:
                    continue
                self._known_executions.add(execution["name"])
                described = self.sfn.describe_execution(executionArn=execution["executionArn"])
                state = json.loads(described["input"])
                self._progress(state["job"]["source"]["key"], "accepted", {"job_id": execution["name"]})

    def _progress(self, key: str, stage: str, details: dict[str, Any]) -> None:
        if self.on_progress:
            self.on_progress(key, stage, details)


def _about(notice: dict[str, Any]) -> str:
    """The key a notice is about: a job's image (or manifest), a batch's manifest."""
    return str((notice.get("source") or notice.get("manifest") or {}).get("key", ""))


class _ThreadRoutedStream(io.TextIOBase):
    """stdout for the caller's thread, the log file for every other thread (the handlers')."""

    def __init__(self, main: IO[str], other: IO[str], main_thread: int) -> None:
        self._main, self._other, self._main_thread = main, other, main_thread

    def _target(self) -> IO[str]:
        return self._main if threading.get_ident() == self._main_thread else self._other

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()


def execution_threads() -> list[threading.Thread]:
    """moto's threads that run executions, in this process."""
    return [t for t in threading.enumerate() if getattr(getattr(t, "_target", None), "__qualname__", "").endswith("_execution_logic")]
