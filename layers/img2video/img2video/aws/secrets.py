"""Secrets Manager: the Novita API key and the Webhook URL's path secret, cached, masked in every log line once read."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from img2video.aws.clients import client, forget_on_reset, quick_client
from img2video.core.settings import Settings
from img2video.novita.client import NovitaClient
from img2video.observability import logger, mask_in_logs, metrics

MIN_SECRET_CHARS = 32


@forget_on_reset
@lru_cache(maxsize=1)
def _secrets_provider() -> Any:
    """Powertools' secrets cache over our own client, so the read has the same bounded timeouts and retries as every AWS call."""
    from aws_lambda_powertools.utilities import parameters

    return parameters.SecretsProvider(boto3_client=client("secretsmanager"))


@forget_on_reset
@lru_cache(maxsize=1)
def _quick_secrets_provider() -> Any:
    """The same cache over a client that fails fast (clients.quick_client), for a secret nothing must wait long for."""
    from aws_lambda_powertools.utilities import parameters

    return parameters.SecretsProvider(boto3_client=quick_client("secretsmanager"))


def secret_string(secret_id: str, refresh: bool = False, quick: bool = False) -> str:
    """A secret's value as stored, cached for five minutes; `quick` reads it through the fast-failing client."""
    provider = _quick_secrets_provider() if quick else _secrets_provider()
    return str(provider.get(secret_id, max_age=300, force_fetch=refresh))


def load_api_key(secret_id: str, refresh: bool = False) -> str:
    """The key from Secrets Manager, plain text or {"api_key": "..."}: cached by Powertools, or read afresh on `refresh`."""
    value = secret_string(secret_id, refresh)
    try:
        data = json.loads(value)
    except ValueError:
        return value.strip()
    if isinstance(data, dict) and isinstance(data.get("api_key"), str):
        return str(data["api_key"]).strip()
    return value.strip()


def novita_client(base_url: str, secret_id: str, *, read_key_afresh: bool = True) -> NovitaClient:
    """A Novita client whose key comes from Secrets Manager; with `read_key_afresh`, the key is read again once if
    Novita refuses it (just rotated or set), so a new key works without waiting for the cache to expire."""
    again = (lambda: load_api_key(secret_id, refresh=True)) if read_key_afresh else None
    return NovitaClient(base_url, load_api_key(secret_id), read_key_afresh=again)


def path_secret(settings: Settings) -> str:
    """The Webhook URL's secret path segment (Secrets Manager, cached, read through the fast-failing client), masked in
    every log line once read."""
    secret = secret_string(settings.webhook_secret_id, quick=True).strip()
    mask_in_logs(secret)
    if len(secret) < MIN_SECRET_CHARS or not secret.isalnum():
        raise RuntimeError(f"the webhook path secret must be at least {MIN_SECRET_CHARS} letters and digits")
    return secret


def webhook_url(settings: Settings) -> str | None:
    """The URL Submit gives Novita (`extra.webhook.url`), or None when the stack's Webhook parameter is off, or when
    its secret cannot be read now: a webhook only makes a job faster, so the paid submit never waits on it."""
    if not settings.webhook_url or not settings.webhook_secret_id:
        return None
    try:
        secret = path_secret(settings)
    except Exception as exc:
        logger.warning("No webhook for this job: its URL's secret could not be read", extra={"error": type(exc).__name__})
        metrics.add_metric(name="WebhookNotRequested", unit=MetricUnit.Count, value=1)
        return None
    return f"{settings.webhook_url.rstrip('/')}/{secret}"
