"""The deployment as CloudFormation will see it: lint-clean, wired as designed, least privilege."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from img2video.core import errors
from img2video_local.cfn import references, translate
from img2video_local.template import REPO_ROOT, load_template

ASL_PATH = REPO_ROOT / "statemachine" / "video_job.asl.json"


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    """The template after the SAM transform, with code locations as `sam package` would write them."""
    return translate(sam)


def of_type(cfn: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in cfn["Resources"].items() if res["Type"] == kind}


def test_cfn_lint_reports_nothing() -> None:
    result = subprocess.run([Path(sys.executable).with_name("cfn-lint"), REPO_ROOT / "template.yaml"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


FUNCTIONS = {"AcceptFunction", "SubmitFunction", "PollFunction", "StoreFunction", "PublishFunction", "WebhookFunction", "BatchFunction"}


def test_functions_run_python313_on_arm64_with_the_shared_layer(cfn: dict[str, Any]) -> None:
    functions = of_type(cfn, "AWS::Lambda::Function")
    assert set(functions) == FUNCTIONS
    for props in (f["Properties"] for f in functions.values()):
        assert props["Runtime"] == "python3.13" and props["Architectures"] == ["arm64"]
        # tracing is a parameter (off by default: the X-Ray SDK alone is ~110 ms of every cold start, bench/import_time.py)
        assert props["Handler"] == "app.lambda_handler" and props["TracingConfig"] == {
            "Mode": {"Fn::If": ["TracingOn", "Active", "PassThrough"]}
        }
        assert props["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingOn", "false", "true"]}
        assert len(props["Layers"]) == 1
    assert of_type(cfn, "AWS::Lambda::LayerVersion")


def _mapping(cfn: dict[str, Any], function: str) -> dict[str, Any]:
    [mapping] = [
        m["Properties"]
        for m in of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": function}
    ]
    return mapping


def test_uploads_are_accepted_from_a_queue_and_paid_submits_are_metered_by_another(cfn: dict[str, Any]) -> None:
    accept, submit = _mapping(cfn, "AcceptFunction"), _mapping(cfn, "SubmitFunction")
    assert accept["EventSourceArn"] == {"Fn::GetAtt": ["UploadQueue", "Arn"]}
    assert submit["EventSourceArn"] == {"Fn::GetAtt": ["SubmitQueue", "Arn"]}
    for mapping in (accept, submit):
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # the paid call: bounded concurrency, one message per invocation so a slow POST starves nothing
    assert submit["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "SubmitConcurrency"}} and submit["BatchSize"] == 1
    for queue_name, function, dlq in (
        ("UploadQueue", "AcceptFunction", "UploadDeadLetterQueue"),
        ("SubmitQueue", "SubmitFunction", "SubmitDeadLetterQueue"),
    ):
        queue = cfn["Resources"][queue_name]["Properties"]
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq, "Arn"]}
        env = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert int(env["MAX_RECEIVE_COUNT"]) == queue["RedrivePolicy"]["maxReceiveCount"]
        # Lambda's guidance: visibility at least six times the function timeout
        assert queue["VisibilityTimeout"] >= 6 * cfn["Resources"][function]["Properties"]["Timeout"]


def test_every_dead_letter_queue_and_function_has_an_alarm_on_the_ops_topic(cfn: dict[str, Any]) -> None:
    alarms = of_type(cfn, "AWS::CloudWatch::Alarm")
    watched_queues = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in alarms.values() if a["Properties"]["Namespace"] == "AWS/SQS"
    }
    assert watched_queues == {"UploadDeadLetterQueue", "SubmitDeadLetterQueue", "BackstopFailureQueue"}
    watched_functions = {
        a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in alarms.values() if a["Properties"]["Namespace"] == "AWS/Lambda"
    }
    assert watched_functions == FUNCTIONS
    assert any(a["Properties"]["MetricName"] == "ExecutionsEndedWithoutNotice" for a in alarms.values())
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "OpsTopic"}]
    # CloudWatch can publish only to a topic whose key lets it: a key of our own, not alias/aws/sns
    assert cfn["Resources"]["OpsTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "OpsKey"}
    key_policy = cfn["Resources"]["OpsKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and "kms:Decrypt" in s["Action"] for s in key_policy)
    assert cfn["Resources"]["OpsEmailSubscription"]["Condition"] == "HasAlertEmail"


def test_an_execution_that_ends_badly_reaches_the_backstop(cfn: dict[str, Any]) -> None:
    [rule] = [r for r in of_type(cfn, "AWS::Events::Rule").values() if r["Properties"]["EventPattern"]["source"] == ["aws.states"]]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.states"] and sorted(pattern["detail"]["status"]) == ["ABORTED", "FAILED", "TIMED_OUT"]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": "VideoJobStateMachine"}]
    target = rule["Properties"]["Targets"][0]["Arn"]["Ref"]  # the alias: the backstop runs the latest version
    assert of_type(cfn, "AWS::Lambda::Alias")[target]["Properties"]["FunctionName"] == {"Ref": "PublishFunction"}
    [config] = of_type(cfn, "AWS::Lambda::EventInvokeConfig").values()
    assert config["Properties"]["Qualifier"] == "live"  # its retries and failure destination are the alias's
    assert config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["BackstopFailureQueue", "Arn"]}


def test_every_function_logs_to_its_own_group_with_retention_created_before_it(cfn: dict[str, Any]) -> None:
    # A group named after its function was created after it: an invocation in between (S3's test event) made Lambda
    # create the group, and the stack's create failed with "already exists". The function now names its group.
    groups = of_type(cfn, "AWS::Logs::LogGroup")
    functions = of_type(cfn, "AWS::Lambda::Function")
    assert {f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for f in functions.values()} == set(groups)
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert not set(references(group["Properties"])) & set(functions), f"{name} waits for its function"


def _expected_retry_seconds(rule: dict[str, Any]) -> float:
    """How long a Retry rule keeps trying on average: FULL jitter waits a uniform share of each backoff."""
    delays = [min(rule["IntervalSeconds"] * rule["BackoffRate"] ** n, rule.get("MaxDelaySeconds", 1e9)) for n in range(rule["MaxAttempts"])]
    return sum(delays) / (2 if rule.get("JitterStrategy") == "FULL" else 1)


def test_lambda_throttling_is_retried_long_enough_that_no_paid_job_fails_for_it() -> None:
    # Given Lambda refusing invocations for want of concurrency (a new account has 10)
    states = json.loads(ASL_PATH.read_text())["States"]
    for name, at_least_seconds in (("CheckVideoTask", 15 * 60), ("StoreVideo", 3600), ("PublishNotice", 3600)):
        rules = [rule for rule in states[name]["Retry"] if rule["ErrorEquals"] == list(errors.LAMBDA_THROTTLED)]
        assert rules, f"{name} fails a job on Lambda's throttling after the transient retries"
        assert _expected_retry_seconds(rules[0]) >= at_least_seconds, name


def test_a_runtime_that_died_is_retried_by_every_lambda_step() -> None:
    # Store's process killed after CompleteMultipartUpload (Runtime.ExitError) ended a stored, paid job INTERNAL
    for state in json.loads(ASL_PATH.read_text())["States"].values():
        if state["Type"] == "Task" and "FunctionArn" in state["Resource"]:
            assert {"Runtime.ExitError", "Runtime.Unknown"} <= set(state["Retry"][0]["ErrorEquals"])


def test_tracing_on_lets_the_state_machine_write_to_x_ray(cfn: dict[str, Any]) -> None:
    # SAM adds X-Ray to the state machine's role only for a literal Tracing: true, never for the !If the template uses
    statements = [s for role, s in _allow_statements(cfn) if role == "VideoJobStateMachineRole"]
    assert any("xray:PutTraceSegments" in s["Action"] for s in statements)
    props = of_type(cfn, "AWS::StepFunctions::StateMachine")["VideoJobStateMachine"]["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": {"Fn::If": ["TracingOn", True, False]}}


def test_the_layer_is_named_per_stack_and_the_public_webhook_can_be_capped(cfn: dict[str, Any]) -> None:
    [layer] = of_type(cfn, "AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["LayerName"] == {"Fn::Sub": "${AWS::StackName}-img2video"}
    webhook = of_type(cfn, "AWS::Lambda::Function")["WebhookFunction"]["Properties"]
    assert webhook["ReservedConcurrentExecutions"]["Fn::If"][1] == {"Ref": "WebhookReservedConcurrency"}
    assert _mapping(cfn, "AcceptFunction")["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "AcceptConcurrency"}}


def test_cfn_lint_reports_nothing_on_the_translated_template(cfn: dict[str, Any], tmp_path: Path) -> None:
    # the pinned cfn-lint skips cycles through AWS::Serverless::* resources; on the translated template it sees E3004
    translated = tmp_path / "translated.json"
    translated.write_text(json.dumps(cfn), encoding="utf-8")
    result = subprocess.run([Path(sys.executable).with_name("cfn-lint"), translated], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_presigned_urls_never_promise_more_than_a_role_session_gives(sam: dict[str, Any]) -> None:
    assert sam["Parameters"]["PresignExpirySeconds"]["MaxValue"] <= 3600


def test_input_bucket_notifies_on_the_prefix_only_and_outputs_cannot_retrigger(cfn: dict[str, Any]) -> None:
    config = cfn["Resources"]["InputBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert len(config) == 1 and config[0]["Event"] == "s3:ObjectCreated:*"
    assert config[0]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": {"Ref": "InputPrefix"}}]
    assert "NotificationConfiguration" not in cfn["Resources"]["OutputBucket"]["Properties"]
    for props in (f["Properties"] for f in of_type(cfn, "AWS::Lambda::Function").values()):
        assert props["Environment"]["Variables"]["OUTPUT_BUCKET"] == {"Ref": "OutputBucket"}


def test_queue_policy_names_the_input_bucket_it_trusts(cfn: dict[str, Any]) -> None:
    bucket_name = cfn["Resources"]["InputBucket"]["Properties"]["BucketName"]
    statement = cfn["Resources"]["UploadQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    source_arn = json.dumps(statement["Condition"]["ArnEquals"]["aws:SourceArn"])
    assert json.dumps(bucket_name["Fn::Join"][1][1]) in source_arn  # the same stack-id suffix


@pytest.mark.parametrize("bucket", ["InputBucket", "OutputBucket"])
def test_buckets_are_private_encrypted_and_tls_only(cfn: dict[str, Any], bucket: str) -> None:
    props = cfn["Resources"][bucket]["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    policies = [p for p in of_type(cfn, "AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket}]
    [statement] = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_a_batchs_chunks_expire_and_no_rule_reaches_the_videos(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    """The lines a batch writes for its Distributed Map are read by its own execution, then never again: they expire,
    where the videos (the output prefix) never do."""
    from img2video.steps.batch import LINES_PREFIX

    rules = cfn["Resources"]["OutputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = {rule["Prefix"]: rule["ExpirationInDays"] for rule in rules if "ExpirationInDays" in rule}
    assert expiring == {LINES_PREFIX: 30}
    videos = sam["Globals"]["Function"]["Environment"]["Variables"]["OUTPUT_PREFIX"]
    assert not videos.startswith(LINES_PREFIX) and not LINES_PREFIX.startswith(videos)


def test_topic_queues_and_table_are_encrypted(cfn: dict[str, Any]) -> None:
    assert cfn["Resources"]["NoticesTopic"]["Properties"]["KmsMasterKeyId"]
    for queue in of_type(cfn, "AWS::SQS::Queue").values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    table = cfn["Resources"]["IdempotencyTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]


def test_email_subscription_is_optional(cfn: dict[str, Any]) -> None:
    subscription = cfn["Resources"]["NoticesEmailSubscription"]
    assert subscription["Condition"] == "HasNotificationEmail" and subscription["Properties"]["Protocol"] == "email"


def _allow_statements(cfn: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, role in of_type(cfn, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement:  # a grant only under a condition (X-Ray when Tracing=true): checked as granted
                    statement = statement["Fn::If"][1]
                if statement["Effect"] == "Allow":
                    found.append((name, statement))
    return found


def test_no_role_is_granted_a_wildcard_action(cfn: dict[str, Any]) -> None:
    statements = _allow_statements(cfn)
    assert statements
    for role, statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in actions if "*" in a], f"{role} grants {actions}"
        x_ray = all(action.startswith("xray:") for action in actions)  # X-Ray's actions take no resource
        assert statement["Resource"] != "*" or x_ray, f"{role} grants {actions} on every resource"


def test_each_role_reaches_only_what_its_function_needs(cfn: dict[str, Any]) -> None:
    def actions(role: str) -> set[str]:
        found: set[str] = set()
        for name, statement in _allow_statements(cfn):
            if name == role:
                found |= set(statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
        return found

    accept, submit, poll, store, publish = (actions(f"{name}FunctionRole") for name in ("Accept", "Submit", "Poll", "Store", "Publish"))
    assert "states:StartExecution" in accept and "states:StartExecution" not in submit | poll | store | publish
    assert {"states:SendTaskSuccess", "states:SendTaskFailure", "states:DescribeExecution"} <= submit
    assert "s3:PutObject" in store and "s3:PutObject" not in accept | submit | publish
    assert not any(a.startswith(("s3:", "sns:", "states:")) for a in poll)
    assert "sns:Publish" in publish and "sns:Publish" not in submit | poll | store
    assert "lambda:InvokeFunction" in actions("VideoJobStateMachineRole") and "sqs:SendMessage" in actions("VideoJobStateMachineRole")
    assert not any(a.startswith("s3:Delete") for a in accept | submit | poll | store | publish)
    # Powertools Idempotency needs item reads and writes, never scans, queries or table management; the jobs table
    # is only ever updated by the steps (conditionally), and Accept alone creates items (the job and its attempt number)
    tables = {name: _dynamodb_grants(cfn, f"{name}FunctionRole") for name in ("Accept", "Submit", "Poll", "Store", "Publish")}
    items = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
    assert tables["Accept"] == {
        "IdempotencyTable": items,
        "JobsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        "JobsTable/index": {"dynamodb:Query"},  # only the by-source index: an image's last job
    }
    assert tables["Submit"] == {"IdempotencyTable": items, "JobsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"}}
    # Publish reads back a batch's item after counting a line's end on it
    assert tables["Publish"] == {"IdempotencyTable": items, "JobsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem"}}
    # Batch creates each line's job item and updates the batch's; it writes only the lines' chunks to the output bucket
    assert _dynamodb_grants(cfn, "BatchFunctionRole") == {
        "IdempotencyTable": items,
        "JobsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    }
    writes = [s["Resource"] for name, s in _allow_statements(cfn) if name == "BatchFunctionRole" and "s3:PutObject" in s["Action"]]
    assert writes == [{"Fn::Sub": "${OutputBucket.Arn}/img2video-batches/*"}]
    reads = [s["Resource"] for name, s in _allow_statements(cfn) if name == "BatchStateMachineRole" and "s3:" in str(s["Action"])]
    assert reads == [{"Fn::Sub": "${OutputBucket.Arn}/img2video-batches/*"}]  # the Distributed Map's ItemReader only
    line = {"dynamodb:BatchGetItem"}  # the states of the jobs at the head of the line for a task slot, in one call
    # (no GetItem: local mode's IAM report showed no call of Poll's or Store's ever used it)
    assert tables["Poll"] == {"JobsTable": {"dynamodb:UpdateItem", *line}}
    assert tables["Store"] == {"JobsTable": {"dynamodb:UpdateItem"}}  # and whether the webhook came
    # the public URL's function: the task's item and the job's state, ending a wait, two secrets; nothing else
    webhook = actions("WebhookFunctionRole")
    assert _dynamodb_grants(cfn, "WebhookFunctionRole") == {"JobsTable": {"dynamodb:GetItem", "dynamodb:UpdateItem", *line}}
    # a task ended: one job from the line for a slot to the SubmitQueue, the others looked at back in line
    wake = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage", "sqs:GetQueueAttributes"}
    assert webhook - {"dynamodb:GetItem", "dynamodb:UpdateItem", *line} == {
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "secretsmanager:GetSecretValue",
        *wake,
    }
    assert poll - {"dynamodb:GetItem", "dynamodb:UpdateItem", *line, "secretsmanager:GetSecretValue", "events:PutEvents"} == wake
    for role in ("PollFunctionRole", "WebhookFunctionRole"):  # only the line and the SubmitQueue
        queues = [s["Resource"] for name, s in _allow_statements(cfn) if name == role and str(s["Action"]).startswith("['sqs:")]
        assert queues == [[{"Fn::GetAtt": ["SlotLineQueue", "Arn"]}, {"Fn::GetAtt": ["SubmitQueue", "Arn"]}]], role
    assert _dynamodb_grants(cfn, "VideoJobStateMachineRole") == {"JobsTable": {"dynamodb:UpdateItem"}}  # the wait's token


def test_the_webhook_url_is_public_only_behind_its_secret_path_and_exists_only_when_asked_for(cfn: dict[str, Any]) -> None:
    sam = load_template()
    [url] = of_type(cfn, "AWS::Lambda::Url").values()
    assert url["Properties"]["AuthType"] == "NONE" and url["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": ["WebhookFunction", "Arn"]}
    permissions = {
        p["Properties"]["Action"]: p["Properties"]
        for p in of_type(cfn, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": "WebhookFunction"}
    }
    assert set(permissions) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert permissions["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"  # both, as URLs made since October 2025 need
    assert permissions["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True  # public only through the URL
    generate = sam["Resources"]["WebhookPathSecret"]["Properties"]["GenerateSecretString"]
    assert generate["PasswordLength"] >= 64 and generate["ExcludePunctuation"] is True  # ~380 random bits, URL-safe
    webhook_resources = ("WebhookPathSecret", "WebhookFunction", "WebhookFunctionUrl", "WebhookUrlPermission", "WebhookInvokePermission")
    assert all(sam["Resources"][name]["Condition"] == "WebhookOn" for name in webhook_resources)
    assert sam["Conditions"]["WebhookOn"] == {"Fn::Equals": [{"Ref": "Webhook"}, "auto"]}
    assert sam["Parameters"]["Webhook"]["AllowedValues"] == ["auto", "off"]
    # with Webhook off, Submit asks Novita for no webhook: its URL and secret are empty
    submit = sam["Resources"]["SubmitFunction"]["Properties"]["Environment"]["Variables"]
    assert submit["WEBHOOK_URL"] == {"Fn::If": ["WebhookOn", {"Fn::GetAtt": ["WebhookFunctionUrl", "FunctionUrl"]}, ""]}
    assert submit["WEBHOOK_SECRET_ID"] == {"Fn::If": ["WebhookOn", {"Ref": "WebhookPathSecret"}, ""]}


def _dynamodb_grants(cfn: dict[str, Any], role: str) -> dict[str, set[str]]:
    """The DynamoDB actions a role holds, by the table (logical id) they name."""
    grants: dict[str, set[str]] = {}
    for name, statement in _allow_statements(cfn):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if name != role or not any(a.startswith("dynamodb:") for a in actions):
            continue
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            # a table (Fn::GetAtt Table.Arn) or one of its indexes (Fn::Sub "${Table.Arn}/index/NAME")
            table = resource["Fn::GetAtt"][0] if "Fn::GetAtt" in resource else resource["Fn::Sub"].split(".Arn}")[0].lstrip("${") + "/index"
            grants.setdefault(table, set()).update(actions)
    return grants


def test_the_batches_state_machine_is_standard_and_invokes_the_batch_functions_version(cfn: dict[str, Any]) -> None:
    props = of_type(cfn, "AWS::StepFunctions::StateMachine")["BatchStateMachine"]["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    placeholders = set(re.findall(r"\$\{(\w+)\}", (ASL_PATH.parent / "batch.asl.json").read_text()))
    assert placeholders == set(props["DefinitionSubstitutions"]) == {"BatchFunctionArn"}
    version = props["DefinitionSubstitutions"]["BatchFunctionArn"]["Ref"]
    assert of_type(cfn, "AWS::Lambda::Version")[version]["Properties"]["FunctionName"] == {"Ref": "BatchFunction"}


def test_state_machine_is_standard_and_substitutes_every_function(cfn: dict[str, Any]) -> None:
    machine = of_type(cfn, "AWS::StepFunctions::StateMachine")["VideoJobStateMachine"]
    props = machine["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    substitutions = props["DefinitionSubstitutions"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", ASL_PATH.read_text()))
    assert placeholders == set(substitutions)
    # the state machine invokes published versions: a running execution keeps the code it started with
    versions = of_type(cfn, "AWS::Lambda::Version")
    for function in ("PollFunction", "StoreFunction", "PublishFunction"):
        version = substitutions[f"{function}Arn"]["Ref"]
        assert versions[version]["Properties"]["FunctionName"] == {"Ref": function}, function
        aliases = [a for a in of_type(cfn, "AWS::Lambda::Alias").values() if a["Properties"]["FunctionName"] == {"Ref": function}]
        assert [a["Properties"]["FunctionVersion"] for a in aliases] == [{"Fn::GetAtt": [version, "Version"]}], function


def test_asl_error_names_exist_and_every_task_ends_in_a_notice() -> None:
    asl = json.loads(ASL_PATH.read_text())
    names = {cls.__name__ for cls in errors.PipelineError.__subclasses__()}
    for state_name, state in asl["States"].items():
        for rule in state.get("Retry", []) + state.get("Catch", []):
            for error_name in rule["ErrorEquals"]:
                prefixes = ("States.", "Lambda.", "SQS.", "Sandbox.", "Runtime.", "DynamoDb.")
                assert error_name in names or error_name.startswith(prefixes), error_name
        if state_name == "WaitForWebhook":  # a wait, not a step: whatever ends it without a video leads to the poll
            assert state["Catch"][-1]["ErrorEquals"] == ["States.ALL"]
            assert {c["Next"] for c in state["Catch"]} == {"PollFailed", "CheckVideoTask", "WaitForVideo"}
            continue
        if state["Type"] == "Task" and state_name != "PublishNotice":
            assert state["Catch"][0]["ErrorEquals"] == ["States.ALL"], f"{state_name} can fail without a notice"
            assert state["Catch"][0]["Next"].endswith("Failed") and asl["States"][state["Catch"][0]["Next"]]["Next"] == "PublishNotice"
    assert asl["States"]["IsVideoReady?"]["Default"] == "WaitForVideo"
    assert asl["States"]["WaitForVideo"]["SecondsPath"] == "$.poll.wait_seconds"
    # permanent provider errors must not be retried: they would only delay the notice
    retried = {name for state in asl["States"].values() for rule in state.get("Retry", []) for name in rule["ErrorEquals"]}
    assert not retried & {"ProviderFailed", "ProviderTimeout", "ProviderRejected", "ProviderAuth", "DownloadFailed"}


def test_every_lambda_task_retries_the_one_set_of_transient_aws_errors_first() -> None:
    asl = json.loads(ASL_PATH.read_text())
    lambda_tasks = {name: state for name, state in asl["States"].items() if state["Type"] == "Task" and "FunctionArn" in state["Resource"]}
    assert set(lambda_tasks) == {"CheckVideoTask", "StoreVideo", "PublishNotice"}
    for name, state in lambda_tasks.items():
        first = state["Retry"][0]
        assert tuple(first["ErrorEquals"]) == errors.TRANSIENT_AWS_ERRORS, name
        assert first["BackoffRate"] >= 2 and first["JitterStrategy"] == "FULL" and first["MaxAttempts"] >= 6, name


def test_the_notice_is_a_step_of_its_own_after_the_store() -> None:
    states = json.loads(ASL_PATH.read_text())["States"]
    assert states["StoreVideo"]["Next"] == "PublishNotice" and "Catch" not in states["PublishNotice"]
    assert states["SubmitToNovita"]["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    assert states["SubmitToNovita"]["Parameters"]["MessageBody"]["token.$"] == "$$.Task.Token"
    assert states["SubmitToNovita"]["TimeoutSecondsPath"] == "$.submit_window_seconds"


def test_every_template_parameter_reaches_the_functions(sam: dict[str, Any]) -> None:
    variables = json.dumps(sam["Globals"]["Function"]["Environment"]["Variables"])
    used_elsewhere = {
        "NotificationEmail",
        "SubmitConcurrency",
        "AcceptConcurrency",
        "WebhookReservedConcurrency",
        "InputPrefix",
        "AlertEmail",
        "LogRetentionDays",
        "Webhook",
    }
    for parameter in sam["Parameters"]:
        assert parameter in variables or parameter in used_elsewhere, parameter


def test_outputs_name_what_users_need(sam: dict[str, Any]) -> None:
    assert {"InputBucketName", "OutputBucketName", "NoticesTopicArn", "StateMachineArn", "NovitaApiKeySecretArn"} <= set(sam["Outputs"])


def test_the_stack_offers_exactly_the_registered_models(sam: dict[str, Any]) -> None:
    from img2video.core.registry import DEFAULT_MODEL, MODELS

    parameter = sam["Parameters"]["DefaultModel"]
    assert parameter["AllowedValues"] == list(MODELS) and parameter["Default"] == DEFAULT_MODEL


def test_job_events_go_to_the_named_bus_only_and_only_from_the_steps_that_change_a_job(cfn: dict[str, Any]) -> None:
    bus = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"}
    granted = {role: s["Resource"] for role, s in _allow_statements(cfn) if "events:PutEvents" in str(s["Action"])}
    assert granted == {f"{name}FunctionRole": bus for name in ("Accept", "Submit", "Poll", "Store", "Publish", "Batch")}
    for role in granted:  # the grant exists only while events are on
        [conditional] = [
            s
            for p in cfn["Resources"][role]["Properties"]["Policies"]
            for s in p["PolicyDocument"]["Statement"]
            if "Fn::If" in s and "events:PutEvents" in str(s)
        ]
        assert conditional["Fn::If"][0] == "JobEventsOn" and conditional["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    assert cfn["Conditions"]["JobEventsOn"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "EventBusName"}, ""]}]}


def test_an_existing_input_bucket_is_reached_only_under_the_input_prefix(cfn: dict[str, Any]) -> None:
    objects = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ExistingInputBucket}/${InputPrefix}*"}
    on_existing: list[tuple[str, Any]] = []
    for role, statement in _allow_statements(cfn):
        resource = statement["Resource"]
        if isinstance(resource, dict) and "Fn::If" in resource and resource["Fn::If"][0] == "UseExistingBucket":
            on_existing.append((role, resource["Fn::If"][1]))
    assert sorted(role for role, _ in on_existing) == [
        "AcceptFunctionRole",
        "BatchFunctionRole",
        "PublishFunctionRole",
        "SubmitFunctionRole",
    ]
    assert all(resource == objects for _, resource in on_existing)
    [listing] = [
        s["Fn::If"][1]
        for p in cfn["Resources"]["AcceptFunctionRole"]["Properties"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if "Fn::If" in s and s["Fn::If"][0] == "UseExistingBucket"
    ]
    assert listing["Action"] == "s3:ListBucket" and listing["Condition"] == {"StringLike": {"s3:prefix": {"Fn::Sub": "${InputPrefix}*"}}}
    rule = cfn["Resources"]["ExistingBucketUploadsRule"]
    assert rule["Condition"] == "UseExistingBucket" and cfn["Resources"]["InputBucket"]["Condition"] == "CreateInputBucket"
    assert rule["Properties"]["EventPattern"]["detail"] == {
        "bucket": {"name": [{"Ref": "ExistingInputBucket"}]},
        "object": {"key": [{"prefix": {"Ref": "InputPrefix"}}]},
    }
