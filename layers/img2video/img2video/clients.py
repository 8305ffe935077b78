"""The boto3 clients and the idempotency stores, created once per container and shared."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import boto3
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError
from botocore.config import Config

from img2video.settings import get_settings

T = TypeVar("T")

# Every AWS call has a bounded worst case, so each function's sequence of calls fits its timeout
# (DESIGN section 9; tests/unit/test_budgets.py adds them up). botocore's standard mode sleeps
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

# Idempotency records (the paid submit, the notice decided for a job) outlive the 90 days for which
# Step Functions reserves an execution name, so no retry of a job can ever pay or notify twice.
IDEMPOTENCY_TTL_SECONDS = 91 * 24 * 3600


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


@cache
def idempotency_store(purpose: str) -> DynamoDBPersistenceLayer:
    """One store per idempotent operation: Powertools configures a store once, with the first key path it sees."""
    return DynamoDBPersistenceLayer(table_name=get_settings().idempotency_table, boto3_client=client("dynamodb"))


_lambda_context: list[Any] = []


def use_lambda_context(context: Any) -> None:
    """Let idempotency records in progress expire with the invocation, so a crashed attempt can be retried."""
    _lambda_context[:] = [context]


def remaining_seconds(default: float = 900.0) -> float:
    """Time left in this invocation (the default outside Lambda)."""
    if _lambda_context and hasattr(_lambda_context[0], "get_remaining_time_in_millis"):
        return float(_lambda_context[0].get_remaining_time_in_millis()) / 1000
    return default


def idempotency_config(key_path: str) -> IdempotencyConfig:
    # A missing key must fail loudly: skipping idempotency could pay for a video twice.
    config = IdempotencyConfig(event_key_jmespath=key_path, expires_after_seconds=IDEMPOTENCY_TTL_SECONDS, raise_on_no_idempotency_key=True)
    if _lambda_context:
        config.register_lambda_context(_lambda_context[0])
    return config


def once_per(key_path: str, purpose: str, argument: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Run the decorated function once per value of `key_path` in its `argument` (a JSON-able dict).

    A retry gets the first call's result back from DynamoDB instead of running it again; a call that
    raised leaves no record, so it can be retried. When the function ran but its result could not be
    saved (DynamoDB failed after the work was done), the result is returned all the same: the work is
    not lost, and the record left in progress keeps any other attempt from redoing it until it expires.
    """
    powertools: Callable[[Callable[..., T]], Callable[..., T]] = idempotent_function(
        data_keyword_argument=argument,
        persistence_store=idempotency_store(purpose),
        config=idempotency_config(key_path),
        key_prefix=purpose,
    )

    def decorator(function: Callable[..., T]) -> Callable[..., T]:
        done: list[T] = []

        def run(**kwargs: Any) -> T:
            result = function(**kwargs)
            done.append(result)
            return result

        wrapped = powertools(functools.wraps(function)(run))

        def call(**kwargs: Any) -> T:
            try:
                return wrapped(**kwargs)
            except IdempotencyPersistenceLayerError as exc:
                if done:
                    return done[-1]
                original = _undo_failed_attempt(purpose, kwargs[argument], exc)
                if original is not None:
                    raise original from None
                raise

        return call

    return decorator


def _undo_failed_attempt(purpose: str, data: Any, exc: IdempotencyPersistenceLayerError) -> BaseException | None:
    """The function raised, and removing its in-progress record failed too: that record would hold every retry off
    until the invocation's whole timeout had passed (15 minutes for Submit). Try the removal again; when it works,
    hand back the function's own error, so the caller treats it as it would have (a 429 is retried after Retry-After)."""
    delete_failure = exc.__cause__
    original = delete_failure.__context__ if delete_failure is not None else None
    if original is None or not str(exc).startswith("Failed to delete record"):
        return None
    for _ in range(2):
        try:
            idempotency_store(purpose).delete_record(data=data, exception=original)  # type: ignore[arg-type]
        except Exception:
            continue
        return original
    return None


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
    idempotency_store.cache_clear()
    get_settings.cache_clear()
