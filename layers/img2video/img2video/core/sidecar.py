"""The sidecar a user drops beside an image: strict parsing into a VideoRequest, with messages a person can act on."""

from __future__ import annotations

import codecs
import difflib
import json
import re
import unicodedata
from collections import Counter
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from img2video.core.errors import InvalidSidecar
from img2video.core.keys import MAX_KEY_BYTES  # S3's limit for any key, so for an extra image's
from img2video.core.settings import MovementAmplitude, Resolution, Settings
from img2video.core.text import sendable, shorten

MODEL = "vidu-q2-turbo-img2video"
MAX_SIDECAR_BYTES = 64 * 1024
MAX_PROMPT_CHARS = 2000
MAX_EXTRA_IMAGES = 10
MAX_TAGS = 20
MAX_TAG_NAME_CHARS = 128

_SAFE_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,120}$")

# What each field accepts, in the words the failure notice uses.
FIELD_RULES: dict[str, str] = {
    "prompt": f"a non-empty string of at most {MAX_PROMPT_CHARS} characters",
    "duration": "an integer number of seconds from 1 to 10",
    "resolution": 'one of "540p", "720p", "1080p"',
    "movement_amplitude": 'one of "auto", "small", "medium", "high"',
    "seed": "an integer from 0 to 2147483647",
    "bgm": "a JSON boolean, true or false",
    "audio": "a JSON boolean, true or false",
    "watermark": "a JSON boolean, true or false",
    "off_peak": "a JSON boolean, true or false",
    "voice_id": "a non-blank string",
    "extra_images": (f"a list of at most {MAX_EXTRA_IMAGES} image keys of at most {MAX_KEY_BYTES} bytes, relative to the sidecar's folder"),
    "output_name": 'a file name without "/", "\\", "..", control or formatting characters, with visible text, at most 120 characters',
    "tags": (
        f"an object of at most {MAX_TAGS} string values of at most 256 characters, with tag names of at most "
        f'{MAX_TAG_NAME_CHARS} characters, e.g. {{"project": "cats"}}'
    ),
}


def _key_sized(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError("longer than an S3 key")
    return value


class Sidecar(BaseModel):
    """The JSON sidecar as written. Every field optional but prompt; stack defaults fill the rest."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: StrictStr
    duration: Annotated[StrictInt, Field(ge=1, le=10)] | None = None
    resolution: Resolution | None = None
    movement_amplitude: MovementAmplitude | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=2147483647)] | None = None
    bgm: StrictBool = False
    audio: StrictBool = False
    watermark: StrictBool | None = None
    off_peak: StrictBool = False
    voice_id: Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=r"\S")] | None = None
    extra_images: Annotated[list[Annotated[StrictStr, AfterValidator(_key_sized)]], Field(max_length=MAX_EXTRA_IMAGES)] = []
    output_name: Annotated[StrictStr, Field(pattern=_SAFE_NAME.pattern)] | None = None
    tags: Annotated[
        dict[Annotated[StrictStr, Field(max_length=MAX_TAG_NAME_CHARS)], Annotated[StrictStr, Field(max_length=256)]],
        Field(max_length=MAX_TAGS),
    ] = {}


class VideoRequest(BaseModel):
    """What a job asks for: the provider fields as sent, plus our own (extra images, output name, tags)."""

    model_config = ConfigDict(frozen=True)

    model: str = MODEL
    prompt: str
    duration: int
    resolution: Resolution
    movement_amplitude: MovementAmplitude
    seed: int | None = None
    bgm: bool = False
    audio: bool = False
    voice_id: str | None = None
    watermark: bool = False
    off_peak: bool = False
    extra_images: tuple[str, ...] = ()
    output_name: str | None = None
    tags: dict[str, str] = {}

    def provider_body(self, images: list[str]) -> dict[str, Any]:
        """The submit body for Novita: only the fields it knows, none left at None."""
        body = self.model_dump(exclude={"model", "extra_images", "output_name", "tags"}, exclude_none=True)
        return {"images": images, **body}

    def for_notice(self) -> dict[str, Any]:
        return self.model_dump(exclude={"tags"}, exclude_none=True, mode="json")


def _show(value: Any) -> str:
    """A value as the user wrote it in JSON, shortened, and always sendable."""
    return shorten(sendable(json.dumps(value, ensure_ascii=False)))


def _describe(error: Any, data: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    field = loc[0] if loc else "sidecar"
    if error["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(field, FIELD_RULES, n=1, cutoff=0.6)
        suggestion = f'; did you mean "{hint[0]}"?' if hint else ""
        return f"unknown field {_show(field)}{suggestion}"
    if error["type"] == "missing":
        return f'"{field}" is required: {FIELD_RULES[field]}'
    where = shorten(sendable(".".join(loc)))
    return f'"{where}" must be {FIELD_RULES.get(field, "valid")}; got {_show(error.get("input", data.get(field)))}'


# --- reading the file ------------------------------------------------------------------------------

# The deepest JSON the schema can use: the sidecar object holding "tags" (an object) or "extra_images" (a list).
MAX_JSON_DEPTH = 2
# What the depth count looks at: an escape (two characters), a quote, a bracket. One pass, linear in the text.
_DEPTH_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def _decode(raw: bytes, key: str) -> str:
    if len(raw) > MAX_SIDECAR_BYTES:
        raise InvalidSidecar(f"{key} is {len(raw)} bytes; a sidecar may be at most {MAX_SIDECAR_BYTES} bytes (64 KiB)")
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InvalidSidecar(f"{key} is UTF-32 text (it starts with a UTF-32 byte order mark); save it as UTF-8")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Notepad's "Unicode": read it as the user meant
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise InvalidSidecar(f"{key} is not valid UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8") from None
    if b"\x00" in raw:
        position = raw.index(b"\x00")
        raise InvalidSidecar(
            f"{key} holds a NUL byte at position {position}: it looks like UTF-16 text without a byte order mark; save it as UTF-8"
        )
    try:
        return raw.decode("utf-8-sig")  # editors on Windows save a BOM; it is not part of the text
    except UnicodeDecodeError as exc:
        raise InvalidSidecar(f"{key} is not valid UTF-8 text: byte 0x{raw[exc.start]:02x} at position {exc.start}") from None


def _json_depth(text: str) -> int:
    """How deep the JSON's arrays and objects nest, counted in one pass without parsing (so without recursion).

    Up to any syntax error it counts as the parser nests, so json.loads never goes deeper than this says.
    """
    depth = deepest = 0
    in_string = False
    for token in _DEPTH_TOKENS.finditer(text):
        char = token.group()
        if char == '"':
            in_string = not in_string
        elif in_string or char[0] == "\\":
            continue
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _load_json(text: str, key: str, problems: list[str]) -> Any:
    """The JSON document, refusing what json.loads would take silently (repeated keys) or crash on (deep nesting)."""
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InvalidSidecar(
            f"{key} has JSON nested {depth} levels deep; a sidecar uses at most {MAX_JSON_DEPTH} "
            '(the object, and a "tags" object or an "extra_images" list inside it)'
        )

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        counts = Counter(name for name, _ in pairs)
        problems.extend(f"{_show(name)} is given {n} times; give each field once" for name, n in counts.items() if n > 1)
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise InvalidSidecar(f"{key} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # a number of thousands of digits: Python refuses to convert it
        raise InvalidSidecar(f"{key} is not valid JSON for a sidecar: {shorten(str(exc), 120)}") from None


# --- what the text must hold -----------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
_ALLOWED_CONTROLS = "\t\n\r"


def _unicode_problems(value: Any, where: str = "") -> list[str]:
    """Lone surrogates (a truncated emoji's `\\ud83d`) anywhere in the document: no UTF-8 text can hold them."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found is None:
            return []
        escape = sendable(found.group())
        where = shorten(sendable(where))
        return [f'"{where}" holds invalid Unicode: a lone surrogate {escape} at position {found.start()} (half of an emoji?)']
    if isinstance(value, dict):
        problems = []
        for name, inner in value.items():
            if _SURROGATE.search(name):
                escape = sendable(_SURROGATE.findall(name)[0])
                problems.append(f"a field name holds invalid Unicode: a lone surrogate {escape} in {_show(name)}")
            else:
                problems += _unicode_problems(inner, f"{where}.{name}" if where else name)
        return problems
    if isinstance(value, list):
        return [problem for index, inner in enumerate(value) for problem in _unicode_problems(inner, f"{where}.{index}")]
    return []


def _without_bad_names(value: Any) -> Any:
    """The document without entries whose names hold lone surrogates (reported already; pydantic stops at them)."""
    if isinstance(value, dict):
        return {name: _without_bad_names(inner) for name, inner in value.items() if not _SURROGATE.search(name)}
    if isinstance(value, list):
        return [_without_bad_names(inner) for inner in value]
    return value


# Letters that render as nothing: Hangul fillers and the Braille blank (categories Lo and So).
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def has_visible_text(text: str) -> bool:
    """At least one letter, digit, punctuation mark or symbol that renders as something.

    Spaces, format and control characters, variation selectors and combining marks alone are not text.
    """
    return any(unicodedata.category(char)[0] in "LNPS" and char not in _BLANK_LOOKING for char in text)


def _prompt_problems(prompt: str) -> list[str]:
    """A prompt must hold visible text: no control characters, not only spaces and invisible format characters."""
    for position, char in enumerate(prompt):
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            return [
                f'"prompt" holds the control character U+{ord(char):04X} at position {position}; '
                "a prompt is plain text (line breaks and tabs are fine)"
            ]
    if not prompt.strip():
        return [f'"prompt" must be {FIELD_RULES["prompt"]}; it is empty']
    if not has_visible_text(prompt):
        invisible = " ".join(dict.fromkeys(f"U+{ord(char):04X}" for char in prompt if not char.isspace()))
        return [f'"prompt" has no visible text, only invisible characters ({invisible}); it must be {FIELD_RULES["prompt"]}']
    length = len(prompt.strip())
    if length > MAX_PROMPT_CHARS:
        return [f'"prompt" must be {FIELD_RULES["prompt"]}; it has {length} characters']
    return []


def parse_sidecar(raw: bytes, key: str, settings: Settings) -> VideoRequest:
    """Parse a `.json` or `.txt` sidecar into a VideoRequest with the stack defaults applied.

    Every problem is found before any is reported, so one failure notice lists them all.
    """
    text = _decode(raw, key)
    problems: list[str] = []
    if key.lower().endswith(".txt"):
        data: Any = {"prompt": text}
    else:
        data = _load_json(text, key, problems)
        if not isinstance(data, dict):
            raise InvalidSidecar(f'{key} must hold a JSON object like {{"prompt": "..."}}; got a {type(data).__name__}')
    problems += _unicode_problems(data)
    if isinstance(data.get("prompt"), str) and not _SURROGATE.search(data["prompt"]):
        problems += _prompt_problems(data["prompt"])
    sidecar = None
    try:
        sidecar = Sidecar.model_validate(_without_bad_names(data))
    except ValidationError as exc:
        # the prompt's own checks above say more than "must be a non-empty string"
        prompt_checked = any(problem.startswith('"prompt"') for problem in problems)
        problems += [p for p in _validation_problems(exc, data) if not (prompt_checked and p.startswith('"prompt"'))]
    if sidecar is not None:
        problems += _output_name_problems(sidecar.output_name)
    if problems:
        raise InvalidSidecar(f"{key}: {_listed(problems)}")
    assert sidecar is not None
    return _to_request(sidecar, settings)


# A notice must stay far below SNS's 256 KiB: a sidecar of 10,000 unknown fields is told about the first few.
MAX_PROBLEMS_LISTED = 10


def _listed(problems: list[str]) -> str:
    unique = list(dict.fromkeys(problems))
    shown = unique[:MAX_PROBLEMS_LISTED]
    if len(unique) > len(shown):
        shown.append(f"and {len(unique) - len(shown)} more problems")
    if any(problem.startswith("unknown field") for problem in unique):
        shown.append(f"known fields: {', '.join(FIELD_RULES)}")
    return "; ".join(shown)


def _validation_problems(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    # a field whose name or value holds a lone surrogate is already reported as invalid Unicode
    def already_reported(error: Any) -> bool:
        texts = [str(part) for part in error["loc"]] + ([error["input"]] if isinstance(error.get("input"), str) else [])
        return any(_SURROGATE.search(text) for text in texts)

    errors = [error for error in exc.errors() if not already_reported(error)]
    return [_describe(error, data) for error in errors]


def _output_name_problems(output_name: str | None) -> list[str]:
    if output_name is None:
        return []
    stem = _without_mp4(output_name)
    hidden = any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in output_name)
    if hidden or ".." in output_name or not has_visible_text(stem) or stem.strip() in ("", "."):
        return [f'"output_name" must be {FIELD_RULES["output_name"]}; got {_show(output_name)}']
    return []


def _without_mp4(output_name: str) -> str:
    """The name the video gets `.mp4` added to: a user's own `.mp4` suffix (any case) is not doubled."""
    return output_name[:-4] if output_name.lower().endswith(".mp4") else output_name


def default_request(settings: Settings) -> VideoRequest:
    """The request for an image with no sidecar when the stack has a default prompt."""
    problems = _prompt_problems(settings.default_prompt)
    if problems:
        raise InvalidSidecar(f"the stack's DefaultPrompt: {'; '.join(problems)}")
    return _to_request(Sidecar(prompt=settings.default_prompt), settings)


def _to_request(sidecar: Sidecar, settings: Settings) -> VideoRequest:
    prompt = sidecar.prompt.strip()
    output_name = _without_mp4(sidecar.output_name) if sidecar.output_name else None
    return VideoRequest(
        prompt=prompt,
        duration=sidecar.duration if sidecar.duration is not None else settings.default_duration,
        resolution=sidecar.resolution or settings.default_resolution,
        movement_amplitude=sidecar.movement_amplitude or settings.default_movement_amplitude,
        seed=sidecar.seed,
        bgm=sidecar.bgm,
        audio=sidecar.audio,
        voice_id=sidecar.voice_id,
        watermark=sidecar.watermark if sidecar.watermark is not None else settings.default_watermark,
        off_peak=sidecar.off_peak,
        extra_images=tuple(sidecar.extra_images),
        output_name=output_name or None,
        tags=sidecar.tags,
    )
