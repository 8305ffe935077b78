"""Secrets masked wherever text may carry them: a provider's answer, an error message, a log line."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from img2video.core.text import map_text

GENERATED_SECRET_CHARS = 64  # the webhook path secret the template generates


def is_generated_secret(secret: str) -> bool:
    """A secret we generated (64 letters and digits): masked with a plain replace. API keys, which a provider may echo
    in any spelling, keep the any-spelling pattern."""
    return len(secret) >= GENERATED_SECRET_CHARS and secret.isascii() and secret.isalnum()


def scrub(text: str, *secrets: str) -> str:
    """`text` with each secret masked, also where it was echoed JSON-escaped (\\u0073k-...) or URL-encoded (%73k-...)."""
    for secret in secrets:
        if is_generated_secret(secret):  # escaping and URL encoding leave letters and digits as they are
            text = text.replace(secret, "***")
        elif secret:
            text = _secret_pattern(secret).sub("***", text)
    return text


def scrub_values(value: Any, *secrets: str) -> Any:
    """A decoded JSON value with `scrub` applied to every string in it, names included."""
    return map_text(value, lambda text: scrub(text, *secrets))


@lru_cache(maxsize=8)  # a key or two per container, and the one it replaced
def _secret_pattern(secret: str) -> re.Pattern[str]:
    """Each character of the secret in any spelling a provider's text may carry it, mixed freely:
    itself; a JSON \\uXXXX escape however often escaped (its backslash perhaps URL-encoded); %XX per UTF-8 byte,
    URL-encoded once or more (its % perhaps JSON-escaped); an HTML character reference (&#115; or &#x73;)."""

    def either_case(hex_digits: str) -> str:
        return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in hex_digits)

    backslashes = r"(?:\\|%5[cC])+"
    percent = rf"(?:%|{backslashes}u0025|&#0*37;|&#[xX]0*25;)"

    def spellings(char: str) -> str:
        forms = [re.escape(char), rf"&#0*{ord(char)};", rf"&#[xX]0*{either_case(f'{ord(char):x}')};"]
        if ord(char) < 0x10000:
            forms.append(rf"{backslashes}u{either_case(f'{ord(char):04x}')}")
        if char == "/":
            forms.append(rf"{backslashes}/")
        forms.append("".join(f"{percent}(?:25)*{either_case(f'{byte:02x}')}" for byte in char.encode()))
        return f"(?:{'|'.join(forms)})"

    return re.compile("".join(spellings(char) for char in secret))
