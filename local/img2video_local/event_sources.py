"""Lambda's SQS event source, locally: batches in the Lambda event shape, bounded concurrency, partial failures and redrive."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from img2video_local.doorbell import IDLE_LOOK_SECONDS, SQS_NEWS
from img2video_local.template import REGION

# Without a MaximumConcurrency, Lambda starts with a handful of pollers; two keep a laptop responsive.
DEFAULT_CONCURRENCY = 2


@dataclass(frozen=True)
class SqsSource:
    function: str  # logical id
    queue_url: str
    queue_arn: str
    batch_size: int
    concurrency: int


class SqsPoller:
    """One event source mapping. Failed records become visible again after `retry_seconds`; SQS (moto) moves a
    message to its dead-letter queue once it was received maxReceiveCount times, as on AWS."""

    def __init__(
        self,
        source: SqsSource,
        sqs: Any,
        invoke: Callable[[str, dict[str, Any]], Any],
        stop: threading.Event,
        retry_seconds: int,
        before_batch: Callable[[SqsSource, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.source, self._sqs, self._invoke, self._stop = source, sqs, invoke, stop
        self._retry_seconds, self._before_batch = retry_seconds, before_batch
        self._slots = threading.Semaphore(source.concurrency)
        self._pool = ThreadPoolExecutor(max_workers=source.concurrency, thread_name_prefix=f"sqs-{source.function}")

    def run(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue
            seen = SQS_NEWS.rings
            try:
                messages = self._receive()
            except Exception:
                self._slots.release()
                if self._stop.is_set():  # the mock is going away under us at shutdown
                    return
                # an event source mapping keeps polling whatever one receive did; a poller that died here once left
                # every upload behind it unread (runtime.serialize_sqs_requests)
                logging.getLogger("img2video_local").exception("Receiving from %s failed; polling on", self.source.queue_url)
                self._stop.wait(0.5)
                continue
            if not messages:
                self._slots.release()
                SQS_NEWS.wait(seen, IDLE_LOOK_SECONDS)  # until a message may have come (doorbell.py)
                continue
            if self._before_batch:
                self._before_batch(self.source, messages)
            self._pool.submit(self._deliver, messages)
        self._pool.shutdown(wait=True)

    def _receive(self) -> list[dict[str, Any]]:
        answer = self._sqs.receive_message(
            QueueUrl=self.source.queue_url,
            MaxNumberOfMessages=self.source.batch_size,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        try:
            event = {"Records": [lambda_sqs_record(m, self.source.queue_arn) for m in messages]}
            try:
                result = self._invoke(self.source.function, event) or {}
                failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
            except Exception:  # the whole batch failed (an error, a timeout, out of memory): every record comes back
                failed = {m["MessageId"] for m in messages}
            for message in messages:
                try:
                    if message["MessageId"] in failed:
                        self._sqs.change_message_visibility(
                            QueueUrl=self.source.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=self._retry_seconds
                        )
                    else:
                        self._sqs.delete_message(QueueUrl=self.source.queue_url, ReceiptHandle=message["ReceiptHandle"])
                except Exception:
                    if not self._stop.is_set():
                        raise
        finally:
            self._slots.release()


def lambda_sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {"stringValue": value.get("StringValue"), "dataType": value.get("DataType", "String")}
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
