"""The one Logger, Tracer and Metrics every module imports."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

from img2video.core.masking import scrub_values

NAMESPACE = "img2video"
F = TypeVar("F", bound=Callable[..., Any])

logger = Logger(service="img2video")
metrics = Metrics(namespace=NAMESPACE, service="img2video")


class _NoTracing:
    """The Tracer's face when tracing is off: importing Powertools' Tracer loads the X-Ray SDK (about 100 ms of every
    cold start) even when POWERTOOLS_TRACE_DISABLED is set, so with tracing off it is never imported."""

    def capture_lambda_handler(self, handler: F) -> F:
        return handler

    def capture_method(self, method: F) -> F:
        return method


def _tracer() -> Any:
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true"):
        return _NoTracing()
    from aws_lambda_powertools import Tracer

    return Tracer(service="img2video")


tracer = _tracer()


class _SecretMask(logging.Filter):
    """Masks every registered secret in a log record's message and fields, however it was spelled (masking.scrub).

    The Novita client masks provider text where it arrives; this is the second line, for anything else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            if record.args:
                record.msg, record.args = record.getMessage(), ()
            for name, value in list(vars(record).items()):
                if isinstance(value, str | dict | list) and name not in ("exc_info", "args"):
                    setattr(record, name, scrub_values(value, *self.secrets))
        return True


_mask = _SecretMask()
logger.addFilter(_mask)


def mask_in_logs(secret: Any) -> None:
    """From now on, no log line of this process shows `secret` (the API key once read, the webhook's path secret;
    masking.scrub masks the generated one with a plain replace, which costs next to nothing)."""
    if isinstance(secret, str) and secret and secret not in _mask.secrets:
        _mask.secrets.append(secret)


@contextmanager
def job_logging(job_id: str) -> Iterator[None]:
    """Every log line within carries the job's id, and none after: a warm container's next invocation starts clean."""
    logger.append_keys(job_id=job_id)
    try:
        yield
    finally:
        logger.remove_keys(["job_id"])
