"""The boto3 clients, created once per container and shared, each call bounded by short timeouts and few retries."""

from __future__ import annotations

import os
from functools import cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config

from img2video.core.settings import get_settings

T = TypeVar("T")

# Every AWS call has a bounded worst case, so each function's sequence of calls fits its timeout
# (docs/design.md, section 9; tests/unit/test_budgets.py adds them up). botocore's standard mode sleeps
# at most 2**(n-1) s (full jitter) before retry n.
AWS_ATTEMPTS = 3
AWS_CONNECT_TIMEOUT = 1.0
AWS_READ_TIMEOUT = 3.0
# S3 parts of 8 MiB go up through the transfer client: a longer read, used only by Store (900 s).
TRANSFER_READ_TIMEOUT = 30.0


def worst_case_seconds(read_timeout: float = AWS_READ_TIMEOUT) -> float:
    """The longest one AWS call can take: every attempt timing out, plus botocore's sleeps between them."""
    sleeps = float(sum(2 ** (n - 1) for n in range(1, AWS_ATTEMPTS)))
    return AWS_ATTEMPTS * (AWS_CONNECT_TIMEOUT + read_timeout) + sleeps


AWS_CALL_WORST_SECONDS = worst_case_seconds()

_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": AWS_ATTEMPTS}, connect_timeout=AWS_CONNECT_TIMEOUT, read_timeout=AWS_READ_TIMEOUT
)
_TRANSFER_CONFIG = _CONFIG.merge(Config(read_timeout=TRANSFER_READ_TIMEOUT))


@cache
def client(service: str) -> Any:
    made: Any = boto3.client(service, config=_CONFIG)
    return made


# The Webhook function answers Novita within its 5 s: each AWS call gets one retry at most and short waits.
QUICK_ATTEMPTS = 2
QUICK_CONNECT_TIMEOUT = 0.5
QUICK_READ_TIMEOUT = 1.0
QUICK_CALL_WORST_SECONDS = QUICK_ATTEMPTS * (QUICK_CONNECT_TIMEOUT + QUICK_READ_TIMEOUT) + 1.0  # and one sleep of at most 1 s
_QUICK_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": QUICK_ATTEMPTS},
    connect_timeout=QUICK_CONNECT_TIMEOUT,
    read_timeout=QUICK_READ_TIMEOUT,
)


@cache
def quick_client(service: str, waits: int = 0) -> Any:
    """A client for a caller that must answer within seconds (the Webhook function): slow AWS fails fast instead.
    `waits`: the seconds a long poll (SQS's WaitTimeSeconds) may hold each answer, on top of the read timeout."""
    config = _QUICK_CONFIG if not waits else _QUICK_CONFIG.merge(Config(read_timeout=QUICK_READ_TIMEOUT + waits))
    return boto3.client(service, config=config)


@cache
def transfer_client() -> Any:
    """S3 for streaming video parts: the same retries, a read timeout sized for 8 MiB parts."""
    return boto3.client("s3", config=_TRANSFER_CONFIG)


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@cache
def presigner() -> Any:
    """S3 for presigned URLs: SigV4 on the regional host, which every bucket accepts (SigV2 is refused by new ones)."""
    return boto3.client(
        "s3",
        region_name=region(),
        endpoint_url=f"https://s3.{region()}.amazonaws.com",
        config=_CONFIG.merge(Config(signature_version="s3v4", s3={"addressing_style": "virtual"})),
    )


_on_reset: list[Any] = []


def forget_on_reset(cached: T) -> T:
    """Register a cache kept outside this module (an lru_cache'd function) for `reset` to clear too."""
    _on_reset.append(cached)
    return cached


def reset() -> None:
    """Forget cached clients and settings (tests and the local runtime change the environment)."""
    client.cache_clear()
    quick_client.cache_clear()
    transfer_client.cache_clear()
    for forget in _on_reset:
        getattr(forget, "cache_clear", lambda: None)()  # tests may stand a fake in a cache's place
    presigner.cache_clear()
    get_settings.cache_clear()
