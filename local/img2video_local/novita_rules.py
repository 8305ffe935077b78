"""What Novita accepts in a submit body, written from its API reference on its own (not from the pipeline's sidecar
model), so that a mistake in either shows as a failing test."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

ALLOWED = {
    "resolution": ("540p", "720p", "1080p"),
    "movement_amplitude": ("auto", "small", "medium", "high"),
}


BOOLEANS = ("bgm", "audio", "watermark", "off_peak")


KNOWN_FIELDS = {"images", "prompt", "duration", "resolution", "movement_amplitude", "seed", "voice_id", "extra", *BOOLEANS}


def validate_body(body: Any) -> str | None:
    """The provider's field validation; returns the first problem's message, in the order Novita checks, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for check in (_unknown_fields, _images, _prompt, _duration, _choices, _extra):
        problem = check(body)
        if problem:
            return problem
    return None


def _unknown_fields(body: dict[str, Any]) -> str | None:
    unknown = set(body) - KNOWN_FIELDS
    return f"unknown field(s): {', '.join(sorted(unknown))}" if unknown else None


def _images(body: dict[str, Any]) -> str | None:
    images = body.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) and i for i in images):
        return "images is required: an array of at least 1 image URL"
    if not all(image.startswith(("http://", "https://", "data:image/")) for image in images):
        return "images must be URLs or data:image/...;base64 URIs"
    return None


def _prompt(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required"
    return "prompt must be at most 2000 characters" if len(prompt) > 2000 else None


def _duration(body: dict[str, Any]) -> str | None:
    duration = body.get("duration", 5)
    return "duration must be an integer between 1 and 10" if type(duration) is not int or not 1 <= duration <= 10 else None


def _choices(body: dict[str, Any]) -> str | None:
    """The fields with a fixed set of values, the booleans and the seed."""
    for name, allowed in ALLOWED.items():
        if name in body and body[name] not in allowed:
            return f"{name} must be one of {', '.join(allowed)}"
    for name in BOOLEANS:
        if name in body and not isinstance(body[name], bool):
            return f"{name} must be a boolean"
    return "seed must be an integer" if "seed" in body and type(body["seed"]) is not int else None


def _extra(body: dict[str, Any]) -> str | None:
    if "extra" not in body:
        return None
    extra = body["extra"]
    if not isinstance(extra, dict) or set(extra) - {"webhook"}:
        return "extra must be an object with at most a webhook"
    webhook = extra.get("webhook", {})
    url = webhook.get("url") if isinstance(webhook, dict) else None
    parts = urlsplit(url) if isinstance(url, str) else None
    loopback = parts is not None and parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    if parts is None or not parts.hostname or not (parts.scheme == "https" or loopback):
        return "extra.webhook.url must be an https URL"
    return None
