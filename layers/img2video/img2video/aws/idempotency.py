"""Work done once per key: Powertools' idempotency over the stack's DynamoDB table, safe when DynamoDB fails after the work."""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError

from img2video.aws.clients import client, forget_on_reset
from img2video.aws.invocation import _lambda_context
from img2video.core.settings import get_settings

T = TypeVar("T")


# Idempotency records (the paid submit, the notice decided for a job) outlive the 90 days for which
# Step Functions reserves an execution name, so no retry of a job can ever pay or notify twice.
IDEMPOTENCY_TTL_SECONDS = 91 * 24 * 3600


@forget_on_reset
@cache
def idempotency_store(purpose: str) -> DynamoDBPersistenceLayer:
    """One store per idempotent operation: Powertools configures a store once, with the first key path it sees."""
    return DynamoDBPersistenceLayer(table_name=get_settings().idempotency_table, boto3_client=client("dynamodb"))


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


def sent_once(purpose: str, message: dict[str, Any], send: Callable[[dict[str, Any]], dict[str, str]]) -> bool:
    """Call `send(message)` once per `message["notice_id"]`, whatever repeats; True when this call sent it (a repeat
    gets the first call's answer from the record and sends nothing)."""
    sent: list[bool] = []

    @once_per("notice_id", purpose=purpose, argument="notice")
    def send_recorded(notice: dict[str, Any]) -> dict[str, str]:
        sent.append(True)
        return send(notice)

    send_recorded(notice=message)
    return bool(sent)


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
