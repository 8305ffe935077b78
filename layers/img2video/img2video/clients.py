"""The boto3 clients and the idempotency store, created once per container and shared."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import boto3
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function
from botocore.config import Config

from img2video.settings import get_settings

T = TypeVar("T")

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)

# Submit keys stay long enough to absorb a re-delivered S3 event long after the job ended.
IDEMPOTENCY_TTL_SECONDS = 7 * 24 * 3600


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_CONFIG)


@cache
def idempotency_store(purpose: str) -> DynamoDBPersistenceLayer:
    """One store per idempotent operation: Powertools configures a store once, with the first key path it sees."""
    return DynamoDBPersistenceLayer(table_name=get_settings().idempotency_table, boto3_client=client("dynamodb"))


_lambda_context: list[Any] = []


def use_lambda_context(context: Any) -> None:
    """Let idempotency records in progress expire with the invocation, so a crashed attempt can be retried."""
    _lambda_context[:] = [context]


def idempotency_config(key_path: str) -> IdempotencyConfig:
    # A missing key must fail loudly: skipping idempotency could pay for a video twice.
    config = IdempotencyConfig(event_key_jmespath=key_path, expires_after_seconds=IDEMPOTENCY_TTL_SECONDS, raise_on_no_idempotency_key=True)
    if _lambda_context:
        config.register_lambda_context(_lambda_context[0])
    return config


def once_per(key_path: str, purpose: str, argument: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Run the decorated function once per value of `key_path` in its `argument` (a JSON-able dict).

    A retry gets the first call's result back from DynamoDB instead of running it again; a call that
    raised leaves no record, so it can be retried.
    """
    decorator: Callable[[Callable[..., T]], Callable[..., T]] = idempotent_function(
        data_keyword_argument=argument,
        persistence_store=idempotency_store(purpose),
        config=idempotency_config(key_path),
        key_prefix=purpose,
    )
    return decorator


def reset() -> None:
    """Forget cached clients and settings (tests and the local runtime change the environment)."""
    client.cache_clear()
    idempotency_store.cache_clear()
    get_settings.cache_clear()
