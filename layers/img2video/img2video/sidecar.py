"""The sidecar a user drops beside an image: strict parsing into a VideoRequest, with messages a person can act on."""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from img2video.errors import InvalidSidecar
from img2video.settings import MovementAmplitude, Resolution, Settings

MODEL = "vidu-q2-turbo-img2video"
MAX_SIDECAR_BYTES = 64 * 1024
MAX_PROMPT_CHARS = 2000
MAX_EXTRA_IMAGES = 10
MAX_TAGS = 20

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
    "voice_id": "a non-empty string",
    "extra_images": f"a list of at most {MAX_EXTRA_IMAGES} image keys relative to the sidecar's folder",
    "output_name": 'a file name without "/", "\\", ".." or control characters, at most 120 characters',
    "tags": f'an object of at most {MAX_TAGS} string values, e.g. {{"project": "cats"}}',
}


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
    voice_id: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    extra_images: Annotated[list[StrictStr], Field(max_length=MAX_EXTRA_IMAGES)] = []
    output_name: Annotated[StrictStr, Field(pattern=_SAFE_NAME.pattern)] | None = None
    tags: Annotated[dict[StrictStr, Annotated[StrictStr, Field(max_length=256)]], Field(max_length=MAX_TAGS)] = {}


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
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: Any, data: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    field = loc[0] if loc else "sidecar"
    if error["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(field, FIELD_RULES, n=1, cutoff=0.6)
        suggestion = f'; did you mean "{hint[0]}"?' if hint else ""
        return f'unknown field "{field}"{suggestion} Known fields: {", ".join(FIELD_RULES)}'
    if error["type"] == "missing":
        return f'"{field}" is required: {FIELD_RULES[field]}'
    where = ".".join(loc)
    return f'"{where}" must be {FIELD_RULES.get(field, "valid")}; got {_show(error.get("input", data.get(field)))}'


def _validation_message(exc: ValidationError, data: dict[str, Any]) -> str:
    problems = [_describe(error, data) for error in exc.errors()]
    return "; ".join(dict.fromkeys(problems))  # one line per problem, no repeats


def _decode(raw: bytes, key: str) -> str:
    if len(raw) > MAX_SIDECAR_BYTES:
        raise InvalidSidecar(f"{key} is {len(raw)} bytes; a sidecar may be at most {MAX_SIDECAR_BYTES} bytes (64 KiB)")
    try:
        return raw.decode("utf-8-sig")  # editors on Windows save a BOM; it is not part of the text
    except UnicodeDecodeError as exc:
        raise InvalidSidecar(f"{key} is not valid UTF-8 text: byte 0x{raw[exc.start]:02x} at position {exc.start}") from None


def parse_sidecar(raw: bytes, key: str, settings: Settings) -> VideoRequest:
    """Parse a `.json` or `.txt` sidecar into a VideoRequest with the stack defaults applied."""
    text = _decode(raw, key)
    if key.lower().endswith(".txt"):
        data: Any = {"prompt": text}
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidSidecar(f"{key} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(data, dict):
            raise InvalidSidecar(f'{key} must hold a JSON object like {{"prompt": "..."}}; got a {type(data).__name__}')
    try:
        sidecar = Sidecar.model_validate(data)
    except ValidationError as exc:
        raise InvalidSidecar(f"{key}: {_validation_message(exc, data)}") from None
    return _to_request(sidecar, key, settings)


def default_request(settings: Settings) -> VideoRequest:
    """The request for an image with no sidecar when the stack has a default prompt."""
    return _to_request(Sidecar(prompt=settings.default_prompt), "default prompt", settings)


def _to_request(sidecar: Sidecar, key: str, settings: Settings) -> VideoRequest:
    prompt = sidecar.prompt.strip()
    if not prompt:
        raise InvalidSidecar(f'{key}: "prompt" must be {FIELD_RULES["prompt"]}; it is empty')
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidSidecar(f'{key}: "prompt" must be {FIELD_RULES["prompt"]}; it has {len(prompt)} characters')
    if sidecar.output_name is not None and (sidecar.output_name.strip() in ("", ".", "..") or ".." in sidecar.output_name):
        raise InvalidSidecar(f'{key}: "output_name" must be {FIELD_RULES["output_name"]}; got {_show(sidecar.output_name)}')
    output_name = sidecar.output_name
    if output_name and output_name.lower().endswith(".mp4"):
        output_name = output_name[:-4]
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
