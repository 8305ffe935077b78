"""Text that has to travel: into a notice, a log line, an error message. Small helpers every such path shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


def sendable(text: str) -> str:
    """`text` as it can be sent anywhere: a lone surrogate (not encodable as UTF-8) written as its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shorten(text: str, limit: int = 60) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def map_text(value: Any, change: Callable[[str], str]) -> Any:
    """`value` with `change` applied to every string in it, names included, however deeply nested."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        return {map_text(name, change): map_text(inner, change) for name, inner in value.items()}
    if isinstance(value, list | tuple):
        return [map_text(inner, change) for inner in value]
    return value
