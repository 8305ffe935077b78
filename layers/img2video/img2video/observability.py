"""The one Logger, Tracer and Metrics every module imports."""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

NAMESPACE = "img2video"

logger = Logger(service="img2video")
tracer = Tracer(service="img2video")
metrics = Metrics(namespace=NAMESPACE, service="img2video")


class _SecretMask(logging.Filter):
    """Masks every registered secret in a log record's message and fields, however it was spelled (novita.scrub).

    The Novita client masks provider text where it arrives; this is the second line, for anything else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            from img2video.novita import scrub_values  # novita imports this module

            if record.args:
                record.msg, record.args = record.getMessage(), ()
            for name, value in list(vars(record).items()):
                if isinstance(value, str | dict | list) and name not in ("exc_info", "args"):
                    setattr(record, name, scrub_values(value, *self.secrets))
        return True


_mask = _SecretMask()
logger.addFilter(_mask)


def mask_in_logs(secret: Any) -> None:
    """From now on, no log line of this process shows `secret` (the API key once read)."""
    if isinstance(secret, str) and secret and secret not in _mask.secrets:
        _mask.secrets.append(secret)
