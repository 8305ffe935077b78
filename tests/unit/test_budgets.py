"""Every function's slowest run fits its Lambda timeout, and every timeout fits its state's TimeoutSeconds.

A function killed by its timeout is not an error it can name: a Submit killed after its POST and before its
idempotency record is saved would pay again on the next delivery; a Poll or Publish killed by Lambda turns into
a generic retry instead of the named error the state machine routes. So each function's worst case is the sum of
the calls its code makes, in order, each at its own worst:

- an AWS call: clients.AWS_CALL_WORST_SECONDS (every attempt timing out on connect and read, plus botocore's sleeps);
- an S3 part or a stored video read through the transfer client: clients.worst_case_seconds(TRANSFER_READ_TIMEOUT);
- a Novita call: novita.worst_case_seconds(method, key_refresh=True) (one attempt, and one more after a refused key);
- the video's first byte: one connect and one read timeout per hop, up to video_transfer.MAX_REDIRECTS redirects.

Bytes that flow at the network's pace (an inline image written into the POST body, the video's body) are bounded
per read, not in total, and are left out, as novita.worst_case_seconds says. The tables below were counted by reading
each step's code; when the code changes, count again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import botocore.client
import pytest
from img2video.aws import clients, jobs_table, secrets, slot_line, video_transfer
from img2video.core.sidecar import MAX_EXTRA_IMAGES
from img2video.novita import client as novita
from img2video.steps import accept, batch, webhook
from img2video_local.template import REPO_ROOT, load_template
from moto import mock_aws

AWS = clients.AWS_CALL_WORST_SECONDS
TRANSFER = clients.worst_case_seconds(clients.TRANSFER_READ_TIMEOUT)
NOVITA_POST = novita.worst_case_seconds("POST", key_refresh=True)
NOVITA_GET = novita.worst_case_seconds("GET", key_refresh=True)
VIDEO_FIRST_BYTE = (video_transfer.MAX_REDIRECTS + 1) * sum(video_transfer.TIMEOUT)


@dataclass(frozen=True)
class Call:
    what: str  # the call(s)
    where: str  # the code that makes them
    count: int
    each: float  # worst seconds of one

    @property
    def seconds(self) -> float:
        return self.count * self.each


def total(calls: list[Call]) -> float:
    return sum(call.seconds for call in calls)


def table(calls: list[Call]) -> str:
    rows = [f"  {c.count:>2} x {c.each:6.2f} s = {c.seconds:7.2f} s  {c.what}  ({c.where})" for c in calls]
    return "\n".join([*rows, f"  total {total(calls):.2f} s"])


# -- the shared pieces ---------------------------------------------------------------------------------------
# Powertools idempotency (idempotency.once_per): a conditional PutItem, then UpdateItem (result saved), GetItem (the record
# was there and the failed put did not return it) or DeleteItem (the function raised): two calls whichever way.
IDEMPOTENT = 2
SECRET = Call("secretsmanager:GetSecretValue, and again after Novita refused the key", "load_api_key via _fresh_key", 2, AWS)
# jobs_table.record_quietly: one conditional UpdateItem of the job's item, in every step
RECORD = Call("dynamodb:UpdateItem of the job's state", "jobs_table.record_quietly", 1, AWS)
# notify.publish_notice: the decision, the final state, the publish, the image's tag
NOTICE = [
    Call("dynamodb: the notice decided once per job id", "notify._decide (once_per)", IDEMPOTENT, AWS),
    RECORD,
    Call("dynamodb: the notice published once per notice id", "notify._publish_once (once_per)", IDEMPOTENT, AWS),
    Call("sns:Publish", "notify._publish_once", 1, AWS),
    Call("s3:GetObjectTagging, s3:PutObjectTagging", "s3_objects.tag_source", 2, AWS),
    Call("events:PutEvents of the terminal event (quick client)", "job_events.job_ended", 1, clients.QUICK_CALL_WORST_SECONDS),
]
# job_events.job_changed: one state change as one event, best effort, through the quick client
EVENT = Call("events:PutEvents of the job's state (quick client)", "job_events.job_changed", 1, clients.QUICK_CALL_WORST_SECONDS)

# -- Submit (one SubmitQueue message per invocation) ----------------------------------------------------------
SUBMIT_URL = [
    Call("states:DescribeExecution", "submit._running_since", 1, AWS),
    Call("dynamodb: the daily limit's claim (TransactWriteItems, then GetItem when refused)", "jobs_table.claim_submission", 2, AWS),
    Call("dynamodb:GetItem of the history of the job's kind", "jobs_table.kind_history", 1, AWS),
    Call(
        "secretsmanager:GetSecretValue of the webhook URL's path (quick client)",
        "secrets.webhook_url",
        1,
        clients.QUICK_CALL_WORST_SECONDS,
    ),
    Call("dynamodb: the POST once per job id", "submit.submit_task (once_per)", IDEMPOTENT, AWS),
    Call("s3:HeadObject IfMatch of the image (not replaced since it was accepted)", "submit.image_reference", 1, AWS),
    SECRET,
    Call("POST the task (presigned image URLs are signed locally, no call)", "NovitaClient.submit", 1, NOVITA_POST),
    RECORD,
    EVENT,
    Call("states:SendTaskSuccess | SendTaskFailure, or sqs:SendMessage", "submit._answer / _answer_failure / _retry_later", 1, AWS),
    Call(
        "dynamodb:GetItem of the line for a task slot: does it move? (quick client)",
        "slot_line.is_moving",
        1,
        clients.QUICK_CALL_WORST_SECONDS,
    ),
    Call(
        "sqs:SendMessage to the line for a task slot, when throttled (quick client)", "slot_line.join", 1, clients.QUICK_CALL_WORST_SECONDS
    ),
]


def inline_images(images: int) -> list[Call]:
    """What each image sent inline adds (off_peak jobs with image_transport auto, or data)."""
    return [
        Call(
            "s3:GetObject of the first bytes (the type, and the size from its Content-Range), per image",
            "submit.image_reference",
            images,
            AWS,
        ),
        Call("s3:GetObject of the image, per image and POST attempt", "InlineImage.open in request_body._encoded", 2 * images, AWS),
    ]


# -- Poll --------------------------------------------------------------------------------------------------
WAKE = Call(
    "dynamodb:UpdateItem of the task's slot (freed once), sqs:ReceiveMessage (short; if empty, GetQueueAttributes and a long "
    "one), dynamodb:BatchGetItem, sqs:SendMessage, "
    "DeleteMessageBatch, ChangeMessageVisibilityBatch, dynamodb:UpdateItem of the line's last look (quick client)",
    "slot_line.task_ended",
    slot_line.WAKE_CALLS,
    clients.QUICK_CALL_WORST_SECONDS,
)
# the line's ReceiveMessage is a long poll: each of its attempts may wait LINE_WAIT_SECONDS before its answer
LINE_WAIT = Call("sqs:ReceiveMessage's long poll of the line", "slot_line.wake_one", clients.QUICK_ATTEMPTS, slot_line.LINE_WAIT_SECONDS)
POLL = [
    SECRET,
    Call("GET task-result", "NovitaClient.task_result", 1, NOVITA_GET),
    WAKE,
    LINE_WAIT,
    Call("dynamodb:UpdateItem of the task's item (the video URL for Store)", "task_item.remember_video", 1, AWS),
    RECORD,
    EVENT,
]


# -- Webhook (one call to its Function URL) ----------------------------------------------------------------
QUICK = clients.QUICK_CALL_WORST_SECONDS
WEBHOOK = [
    Call("secretsmanager:GetSecretValue of the URL's path", "secrets.path_secret (quick client)", 1, QUICK),
    Call("dynamodb:GetItem of the task's item", "webhook._settle (quick client)", 1, QUICK),
    Call("secretsmanager:GetSecretValue of the API key", "secrets.load_api_key", 1, AWS),
    Call("GET task-result: one attempt, short waits, no second key", "NovitaClient.task_result", 1, sum(webhook.CONFIRM_TIMEOUT)),
    Call("dynamodb:UpdateItem of the task's item (the outcome, once)", "webhook._settle (quick client)", 1, QUICK),
    Call("states:SendTaskSuccess | SendTaskFailure", "webhook._end_wait (quick client)", 1, QUICK),
    RECORD,
    Call(
        "dynamodb:UpdateItem of the kind's webhook arrivals (three for its first)",
        "jobs_table.record_webhook_arrival (quick client)",
        3,
        QUICK,
    ),
    WAKE,
    LINE_WAIT,
]


# -- Store -------------------------------------------------------------------------------------------------
def store_fresh(parts: int) -> list[Call]:
    """Nothing stored yet: the result, the video streamed in `parts` 8 MiB parts, the manifest."""
    return [
        EVENT,
        Call("s3:HeadObject of the video (404)", "store._already_stored", 1, AWS),
        SECRET,
        Call("GET task-result (a fresh video URL)", "NovitaClient.task_result", 1, NOVITA_GET),
        Call("the video's answer, each hop", "video_transfer._open", 1, VIDEO_FIRST_BYTE),
        Call("s3:CreateMultipartUpload", "video_transfer.stream_video_to_s3", 1, TRANSFER),
        Call("s3:UploadPart per 8 MiB", "video_transfer.stream_video_to_s3", parts, TRANSFER),
        Call("s3:CompleteMultipartUpload, and AbortMultipartUpload if it failed", "video_transfer.stream_video_to_s3/_abort", 2, TRANSFER),
        Call("s3:PutObject of the manifest", "store.store_video", 1, AWS),
        Call("dynamodb:UpdateItem of the task's item (its notes, taken)", "task_item.take_notes", 1, AWS),
        Call(
            "dynamodb:UpdateItem of the kind's generation times (three for a kind's first job)", "jobs_table.record_generation_time", 3, AWS
        ),
        RECORD,
    ]


STORE_RESUMED = [
    EVENT,
    Call("s3:HeadObject of the video (this job's)", "store._already_stored", 1, AWS),
    Call("s3:GetObject of the manifest (404)", "store._already_stored", 1, AWS),
    Call("s3:GetObject of the stored video, hashed", "store._already_stored (transfer client)", 1, TRANSFER),
    Call("s3:PutObject of the manifest", "store.store_video", 1, AWS),
    RECORD,
]
# a batch line's notice counts its end on the batch's item and reads it back (batches.line_ended)
LINE_ENDED = [Call("dynamodb:UpdateItem of the batch's item, returning it", "batches.line_ended", 1, AWS)]
# the last one publishes the batch's notice once (batches.complete_if_done)
BATCH_COMPLETED = [
    Call("dynamodb: the batch's notice published once", "batches._publish_once (once_per)", IDEMPOTENT, AWS),
    Call("sns:Publish", "batches._publish_once", 1, AWS),
    Call("events:PutEvents of the batch's event (quick client)", "job_events.batch_ended", 1, clients.QUICK_CALL_WORST_SECONDS),
    Call("dynamodb:UpdateItem (completed_at)", "batches.complete_if_done", 1, AWS),
]

# -- Publish -----------------------------------------------------------------------------------------------
PUBLISH_STATE = [Call("s3:GetObject of the manifest", "publish.stored_notice", 1, AWS), *NOTICE]
PUBLISH_BACKSTOP = [
    Call("states:DescribeExecution (the event carried no input)", "publish.publish_for_ended_execution", 1, AWS),
    *PUBLISH_STATE,
]


# -- Accept (per record; the handler starts a record only with ACCEPT_RECORD_WORST_SECONDS left) ---------------
def accept_path(*tail: Call, extra_images: int = 0) -> list[Call]:
    """An image's record up to its outcome: listed (NFC and NFD when they differ), paired, validated."""
    return [
        Call("s3:ListObjectsV2, NFC and NFD prefixes", "accept._siblings", 2, AWS),
        Call("s3:GetObject of the sidecar", "accept._accept", 1, AWS),
        Call("s3:GetObject of the image's header (one or two reads) and last bytes", "images.check_image", 3, AWS),
        Call("s3:HeadObject + three ranged GetObject per extra image", "accept._extra_image_keys", 4 * extra_images, AWS),
        *tail,
    ]


START = Call("states:StartExecution", "intake.start_execution", 1, AWS)
LATEST = Call("dynamodb:Query of the image's last job (a pair uploaded again?)", "jobs_table.latest_attempt", 1, AWS)
# the job's item and attempt number: GetItem (counter), TransactWriteItems, GetItem (job) when it was refused
OPEN = Call("dynamodb: the job's item and attempt number", "jobs_table.open_attempt", jobs_table.OPEN_ATTEMPT_CALLS, AWS)
TAG = Call("s3:GetObjectTagging, s3:PutObjectTagging", "s3_objects.tag_source", 2, AWS)
ACCEPT_PATHS = {
    "accepted": accept_path(LATEST, OPEN, EVENT, START, TAG),
    "awaiting its sidecar": [
        Call("s3:ListObjectsV2, NFC and NFD prefixes", "accept._siblings", 2, AWS),
        Call("sqs:SendMessage (the re-check)", "accept.requeue", 1, AWS),
        TAG,
    ],
    "refused (a bad image after a good sidecar)": accept_path(LATEST, OPEN, *NOTICE),
    "INTERNAL on the last delivery (StartExecution failed)": accept_path(LATEST, OPEN, EVENT, START, *NOTICE),
    f"INTERNAL with {MAX_EXTRA_IMAGES} extra images": accept_path(LATEST, OPEN, EVENT, START, *NOTICE, extra_images=MAX_EXTRA_IMAGES),
    f"accepted with {MAX_EXTRA_IMAGES} extra images": accept_path(LATEST, OPEN, EVENT, START, TAG, extra_images=MAX_EXTRA_IMAGES),
}


# -- the stack's numbers --------------------------------------------------------------------------------------
CFN = load_template()
ASL = json.loads((REPO_ROOT / "statemachine/video_job.asl.json").read_text(encoding="utf-8"))


def timeout(function: str) -> int:
    props = CFN["Resources"][function]["Properties"]
    return int(props.get("Timeout", CFN["Globals"]["Function"]["Timeout"]))


def state_timeout(function: str) -> int:
    """TimeoutSeconds of the Task state whose Resource is this function (through DefinitionSubstitutions)."""
    substitutions = CFN["Resources"]["VideoJobStateMachine"]["Properties"]["DefinitionSubstitutions"]
    [name] = [key for key, value in substitutions.items() if value == {"Ref": f"{function}.Version"}]
    [state] = [s for s in ASL["States"].values() if s.get("Resource") == "${" + name + "}"]
    return int(state["TimeoutSeconds"])


BUDGETS = {
    ("SubmitFunction", "presigned image URL"): SUBMIT_URL,
    ("SubmitFunction", "one image inline (off_peak)"): SUBMIT_URL + inline_images(1),
    ("PollFunction", "one poll"): POLL,
    ("StoreFunction", "a video of one 8 MiB part"): store_fresh(parts=1),
    ("StoreFunction", "resumed: video stored, manifest missing"): STORE_RESUMED,
    ("PublishFunction", "PublishNotice step"): PUBLISH_STATE,
    ("PublishFunction", "EventBridge backstop"): PUBLISH_BACKSTOP,
    ("PublishFunction", "backstop of a batch's last line"): PUBLISH_BACKSTOP + LINE_ENDED + BATCH_COMPLETED,
    ("BatchFunction", "the count of lines, completing the batch"): [
        Call("dynamodb:UpdateItem (lines), returning the item", "batches.set_listed", 1, AWS),
        *BATCH_COMPLETED,
    ],
    ("WebhookFunction", "a confirmed webhook"): WEBHOOK,
}


@pytest.mark.parametrize(("function", "scenario"), list(BUDGETS), ids=[f"{f}: {s}" for f, s in BUDGETS])
def test_the_worst_case_of_each_function_fits_its_timeout(function: str, scenario: str) -> None:
    calls = BUDGETS[(function, scenario)]
    assert total(calls) <= timeout(function), f"{function} ({scenario}) may outlive its {timeout(function)} s timeout:\n{table(calls)}"


@pytest.mark.parametrize("function", ["PollFunction", "StoreFunction", "PublishFunction"])
def test_each_function_times_out_before_its_state_does(function: str) -> None:
    # the state must see the function's own error (or Lambda's timeout), never a States.Timeout of a still-running try
    assert timeout(function) < state_timeout(function)


# -- Batch: a manifest's line (the lines step starts another only with batch.LINE_WORST_SECONDS left) -------------
def line_path(*tail: Call) -> list[Call]:
    """A line with an end frame and every extra image a sidecar allows: each a HEAD and three ranged reads."""
    return [
        Call("s3:HeadObject + three ranged GetObject of the image", "batch._accept", 4, AWS),
        Call("s3:HeadObject + 3 ranged GetObject, end frame and each extra image", "intake.image_beside", 4 * (1 + MAX_EXTRA_IMAGES), AWS),
        Call("dynamodb:PutItem claiming the video's key (its holder returned on refusal)", "batches.claim_output", 1, AWS),
        Call("dynamodb:PutItem of the line's job (numbered as its manifest's attempt)", "jobs_table.open_attempt", 1, AWS),
        *tail,
    ]


LINE_PATHS = {
    "accepted": line_path(EVENT, START),
    "refused after its images were read": line_path(*NOTICE, *LINE_ENDED),
}


def test_the_sweep_starts_another_line_only_when_its_worst_case_fits() -> None:
    # a line without a job after the Map: is its execution there? if not, its item, notice and end
    calls = [Call("states:DescribeExecution", "batch._refuse_unless_started", 1, AWS), *line_path()[2:], *NOTICE, *LINE_ENDED]
    assert total(calls) <= batch.SWEEP_LINE_WORST_SECONDS, table(calls)


@pytest.mark.parametrize("path", list(LINE_PATHS))
def test_the_batch_function_starts_a_line_only_when_its_worst_case_fits(path: str) -> None:
    assert total(LINE_PATHS[path]) <= batch.LINE_WORST_SECONDS <= timeout("BatchFunction"), table(LINE_PATHS[path])


def test_accept_starts_a_record_only_when_its_reserve_fits_the_timeout() -> None:
    assert timeout("AcceptFunction") >= accept.ACCEPT_RECORD_WORST_SECONDS
    assert total(ACCEPT_PATHS["accepted"]) <= accept.ACCEPT_RECORD_WORST_SECONDS


RESERVE_CALLS = accept.ACCEPT_RECORD_WORST_SECONDS / AWS


def test_accepts_reserve_covers_every_path_of_one_record() -> None:
    short = {name: total(calls) for name, calls in ACCEPT_PATHS.items() if total(calls) > accept.ACCEPT_RECORD_WORST_SECONDS}
    assert not short, (
        f"PRODUCT BUG (layers/img2video/img2video/steps/accept.py, ACCEPT_RECORD_WORST_SECONDS = {RESERVE_CALLS:g} AWS calls "
        f"= {accept.ACCEPT_RECORD_WORST_SECONDS:g} s): these paths of one record make more calls, so the handler may start "
        f"a record it cannot finish before the {timeout('AcceptFunction')} s timeout: "
        + "; ".join(f"{name}: {seconds:g} s" for name, seconds in short.items())
        + "\n"
        + "\n".join(f"{name}:\n{table(ACCEPT_PATHS[name])}" for name in short)
    )


def test_an_off_peak_job_with_every_extra_image_a_sidecar_allows_fits_the_submit_timeout() -> None:
    calls = SUBMIT_URL + inline_images(1 + MAX_EXTRA_IMAGES)
    fitting = math.floor((timeout("SubmitFunction") - total(SUBMIT_URL)) / total(inline_images(1)))
    assert total(calls) <= timeout("SubmitFunction"), (
        f"PRODUCT BUG (layers/img2video/img2video/steps/submit.py image_reference, template.yaml SubmitFunction Timeout): an "
        f"off_peak job sends its image and up to {MAX_EXTRA_IMAGES} extra images inline, 3 S3 calls each, all before or "
        f"during the one POST and with no check of the time left; at worst that is {total(calls):g} s against a "
        f"{timeout('SubmitFunction')} s timeout (only {fitting} inline image(s) fit). A Submit killed after its POST and "
        f"before the idempotency record is saved pays again on the next delivery.\n{table(calls)}"
    )


def test_a_store_fits_at_least_one_part_and_says_how_many() -> None:
    fixed = total(store_fresh(parts=0))
    parts = math.floor((timeout("StoreFunction") - fixed) / TRANSFER)
    # Store is resumable (a stored video is never fetched again, an unfinished upload is aborted or expires),
    # so a larger video whose every part is at its worst is retried by StoreVideo's Retry rather than lost.
    assert parts >= 1, f"not even one 8 MiB part fits:\n{table(store_fresh(parts=1))}"


def test_queues_give_each_delivery_six_times_its_functions_timeout() -> None:
    for queue, function in (("SubmitQueue", "SubmitFunction"), ("UploadQueue", "AcceptFunction")):
        visibility = CFN["Resources"][queue]["Properties"]["VisibilityTimeout"]
        assert visibility >= 6 * timeout(function), (queue, visibility, timeout(function))


# -- the per-call figures the tables rely on ----------------------------------------------------------------
def test_one_aws_call_makes_as_many_attempts_as_its_worst_case_counts() -> None:
    """AWS_CALL_WORST_SECONDS counts AWS_ATTEMPTS attempts; the clients must not make more."""
    for made in (clients.client("s3"), clients.transfer_client(), clients.presigner()):
        config = made.meta.config
        assert config.connect_timeout == clients.AWS_CONNECT_TIMEOUT and config.retries.get("mode") == "standard"
        assert config.read_timeout in (clients.AWS_READ_TIMEOUT, clients.TRANSFER_READ_TIMEOUT)
        attempts = config.retries.get("total_max_attempts")
        if attempts == clients.AWS_ATTEMPTS:
            continue
        # botocore's standard mode sleeps at most min(2 ** (n - 1), 20) s before retry n
        sleeps = sum(min(2**n, 20) for n in range(attempts - 1))
        real_aws = attempts * (clients.AWS_CONNECT_TIMEOUT + clients.AWS_READ_TIMEOUT) + sleeps
        real_transfer = attempts * (clients.AWS_CONNECT_TIMEOUT + clients.TRANSFER_READ_TIMEOUT) + sleeps
        over = []
        for (function, scenario), calls in BUDGETS.items():
            seconds = sum(c.count * {AWS: real_aws, TRANSFER: real_transfer}.get(c.each, c.each) for c in calls)
            if seconds > timeout(function):
                over.append(f"{function} ({scenario}): {seconds:g} s > {timeout(function)} s")
        reserve = accept.ACCEPT_RECORD_WORST_SECONDS / AWS * real_aws
        if reserve > timeout("AcceptFunction"):
            over.append(f"AcceptFunction reserve ({RESERVE_CALLS:g} AWS calls): {reserve:g} s > {timeout('AcceptFunction')} s")
        raise AssertionError(
            f"PRODUCT BUG (layers/img2video/img2video/aws/clients.py, _CONFIG = Config(retries={{'mode': 'standard', "
            f"'max_attempts': AWS_ATTEMPTS}})): botocore's 'max_attempts' counts retries, not attempts (it becomes "
            f"total_max_attempts = {attempts}), so every AWS call makes {attempts} attempts while AWS_CALL_WORST_SECONDS "
            f"counts {clients.AWS_ATTEMPTS}: one call's worst is {real_aws:g} s, not {AWS:g} s (a transfer call "
            f"{real_transfer:g} s, not {TRANSFER:g} s). With the real figure these budgets no longer fit: "
            + "; ".join(over)
            + ". Fix: Config(retries={'mode': 'standard', 'total_max_attempts': AWS_ATTEMPTS})."
        )


def test_the_api_key_is_read_through_a_client_as_bounded_as_every_other_aws_call(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, Any]] = []
    real = botocore.client.BaseClient._make_api_call

    def record(self: Any, operation: str, params: dict[str, Any]) -> Any:
        seen.append((self.meta.service_model.service_name, self.meta.config))
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    with mock_aws():
        clients.reset()
        import boto3

        secret = boto3.client("secretsmanager", region_name="us-east-1").create_secret(Name="k", SecretString='{"api_key": "x"}')
        seen.clear()
        assert secrets.load_api_key(secret["ARN"], refresh=True) == "x"
    [config] = [config for service, config in seen if service == "secretsmanager"]
    expected = clients.client("s3").meta.config
    assert (config.connect_timeout, config.read_timeout, config.retries) == (
        expected.connect_timeout,
        expected.read_timeout,
        expected.retries,
    ), "the Secrets Manager read counts as one AWS call in the tables above: it must use the bounded client config"
