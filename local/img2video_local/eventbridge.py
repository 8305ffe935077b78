"""EventBridge's "Step Functions Execution Status Change" events, locally: each execution that ends matching a rule's
pattern is delivered once, asynchronously, to the rule's target, with Lambda's async retries and on-failure queue."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from img2video_local.doorbell import EXECUTION_ENDED, IDLE_LOOK_SECONDS
from img2video_local.template import ACCOUNT, REGION

log = logging.getLogger(__name__)
ASYNC_RETRIES = 2  # Lambda retries a failed asynchronous invocation twice


class ExecutionStatusEvents:
    def __init__(
        self,
        sfn: Any,
        state_machine_arn: str,
        statuses: list[str],
        deliver: Callable[[dict[str, Any]], Any],
        on_failure: Callable[[dict[str, Any], BaseException], None],
        stop: threading.Event,
        retry_delay: float = 1.0,
    ) -> None:
        self._sfn, self._arn, self._statuses = sfn, state_machine_arn, statuses
        self._deliver, self._on_failure, self._stop, self._retry_delay = deliver, on_failure, stop, retry_delay
        self._seen: set[str] = set()
        self.delivered = 0
        self.missed_looks = 0
        self._workers: list[threading.Thread] = []

    def run(self) -> None:
        while not self._stop.is_set():
            seen = EXECUTION_ENDED.rings
            if self._look():
                EXECUTION_ENDED.wait(seen, 3 * IDLE_LOOK_SECONDS)  # until an execution ends (doorbell.py)
            else:
                self._stop.wait(0.25)  # a look failed: look again soon, as EventBridge keeps delivering

    def _look(self) -> bool:
        """Deliver each execution that ended with a status the rule matches, once; False when a listing failed."""
        whole = True
        for status in self._statuses:
            try:
                pages = self._sfn.get_paginator("list_executions").paginate(stateMachineArn=self._arn, statusFilter=status)
                executions = [e for page in pages for e in page["executions"]]
            except Exception as exc:
                if self._stop.is_set():
                    return True
                # moto's listing can trip over an execution being started at that moment
                self.missed_looks += 1
                log.warning("Listing executions failed; looking again: %s: %s", type(exc).__name__, exc)
                whole = False
                continue
            for execution in executions:
                if execution["executionArn"] not in self._seen:
                    self._seen.add(execution["executionArn"])
                    worker = threading.Thread(target=self._send, args=(execution["executionArn"],), daemon=True, name="eventbridge")
                    worker.start()
                    self._workers.append(worker)
        return whole

    def _send(self, execution_arn: str) -> None:
        event = self._event(execution_arn)
        error: BaseException | None = None
        for attempt in range(ASYNC_RETRIES + 1):
            if attempt:
                time.sleep(self._retry_delay * attempt)
            try:
                self._deliver(event)
                self.delivered += 1
                return
            except Exception as exc:
                error = exc
        if error is not None and not self._stop.is_set():
            self._on_failure(event, error)

    def _event(self, execution_arn: str) -> dict[str, Any]:
        described = self._sfn.describe_execution(executionArn=execution_arn)
        return {
            "version": "0",
            "id": execution_arn.rsplit(":", 1)[-1],
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": ACCOUNT,
            "region": REGION,
            "resources": [execution_arn],
            "detail": {
                "executionArn": execution_arn,
                "stateMachineArn": self._arn,
                "name": described.get("name"),
                "status": described["status"],
                "input": described.get("input"),
                "inputDetails": {"included": True},
                "error": described.get("error"),
                "cause": described.get("cause"),
                "output": None,  # an execution that ended badly has none
            },
        }

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
