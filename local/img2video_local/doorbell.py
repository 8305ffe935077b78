"""Doorbells for local mode's pollers: they sleep until something may have arrived, instead of asking every 0.1 s.

An event source mapping on AWS long-polls its queue, and EventBridge pushes an execution's end; local mode's pollers
asked moto ten times a second each, and an idle `img2video local up` burned about a third of a core doing so. moto
rings a bell here when a message is sent or made visible again (at once, or once its delay or visibility timeout has
passed) and when an execution ends, so a poller that found nothing waits for the bell, with a slow look now and then
as a safety net for what no bell announces (a message's visibility timeout running out unseen)."""

from __future__ import annotations

import functools
import heapq
import threading
import time
from collections.abc import Callable
from typing import Any


class Doorbell:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._rings = 0
        self._due: list[float] = []  # rings to come (monotonic seconds): a delayed message, a visibility timeout

    @property
    def rings(self) -> int:
        with self._changed:
            return self._rings

    def ring(self, after: float = 0.0) -> None:
        with self._changed:
            if after > 0:
                heapq.heappush(self._due, time.monotonic() + after)
            else:
                self._rings += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Return once the bell has rung since `seen` (read before the poller last looked), or after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._rings == seen:
                now = time.monotonic()
                if self._due and self._due[0] <= now:
                    while self._due and self._due[0] <= now:
                        heapq.heappop(self._due)
                    self._rings += 1
                    self._changed.notify_all()
                    return
                wake = min(deadline, self._due[0]) if self._due else deadline
                if wake <= now:
                    return
                self._changed.wait(wake - now)


IDLE_LOOK_SECONDS = 2.0  # the safety net: how often an idle poller looks anyway
SQS_NEWS = Doorbell()  # a message sent, or one that will be visible again
EXECUTION_ENDED = Doorbell()


def install() -> None:
    """Make moto ring the bells (once per process; harmless with nobody waiting)."""
    from moto.sqs.models import SQSBackend
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

    if getattr(SQSBackend.send_message, "img2video_doorbell", False):
        return
    _after(SQSBackend, "send_message", lambda args, kwargs: [_number(kwargs, args, "delay_seconds", 3)])
    _after(SQSBackend, "send_message_batch", lambda args, kwargs: _entries(kwargs, args, "DelaySeconds"))
    _after(SQSBackend, "change_message_visibility", lambda args, kwargs: [_number(kwargs, args, "visibility_timeout", 2)])
    _after(SQSBackend, "change_message_visibility_batch", lambda args, kwargs: _entries(kwargs, args, "VisibilityTimeout"))
    _ring_after(BaseExecutionWorkerCommunication, "terminated", EXECUTION_ENDED)


def _number(kwargs: dict[str, Any], args: tuple[Any, ...], name: str, position: int) -> float:
    value = kwargs.get(name, args[position] if len(args) > position else 0)
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _entries(kwargs: dict[str, Any], args: tuple[Any, ...], field: str) -> list[float]:
    """The delays a batch's entries ask for (send_message_batch takes a dict of entries, the visibility batch a list)."""
    entries = kwargs.get("entries", args[1] if len(args) > 1 else [])
    values = entries.values() if isinstance(entries, dict) else entries
    return [_number(entry, (), field, 0) for entry in values if isinstance(entry, dict)]


def _after(cls: type, name: str, delays: Callable[[tuple[Any, ...], dict[str, Any]], list[float]]) -> None:
    """After `cls.name` succeeds: ring SQS_NEWS now, and again when what it made visible later becomes visible."""
    original = getattr(cls, name)

    @functools.wraps(original)
    def rung(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        SQS_NEWS.ring()
        for later in set(delays(args, kwargs)):
            if later > 0:
                SQS_NEWS.ring(after=later)
        return result

    rung.img2video_doorbell = True  # type: ignore[attr-defined]
    setattr(cls, name, rung)


def _ring_after(cls: type, name: str, bell: Doorbell) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def rung(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        finally:
            bell.ring()

    setattr(cls, name, rung)
