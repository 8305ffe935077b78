"""The sidecar a user drops beside an image: strict parsing into a VideoRequest, with messages a person can act on."""

from __future__ import annotations

import codecs
import json
import re
import unicodedata
from collections import Counter
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from img2video.core.errors import InvalidSidecar
from img2video.core.keys import MAX_KEY_BYTES  # S3's limit for any key, so for an extra image's
from img2video.core.registry import DEFAULT_MODEL, MODELS, OWN_FIELDS, ModelSpec, all_field_names, closest_models, models_taking, spelled
from img2video.core.settings import Settings
from img2video.core.text import sendable, shorten

MAX_SIDECAR_BYTES = 64 * 1024
MAX_EXTRA_IMAGES = 10
MAX_TAGS = 20
MAX_TAG_NAME_CHARS = 128

_SAFE_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,120}$")

# What our own fields accept, in the words the failure notice uses; the model's fields say it themselves (registry.py).
OWN_RULES: dict[str, str] = {
    "model": "the name of a Novita image-to-video model (img2video models lists them)",
    "end_image": f"an image key of at most {MAX_KEY_BYTES} bytes, relative to the sidecar's folder: the video's last frame",
    "extra_images": (f"a list of at most {MAX_EXTRA_IMAGES} image keys of at most {MAX_KEY_BYTES} bytes, relative to the sidecar's folder"),
    "output_name": 'a file name without "/", "\\", "..", control or formatting characters, with visible text, at most 120 characters',
    "tags": (
        f"an object of at most {MAX_TAGS} string values of at most 256 characters, with tag names of at most "
        f'{MAX_TAG_NAME_CHARS} characters, e.g. {{"project": "cats"}}'
    ),
}

# The stack's defaults (DefaultDuration, ...) by sidecar field: each fills a model's field when that model accepts it.
STACK_DEFAULTS = {
    "duration": "default_duration",
    "resolution": "default_resolution",
    "movement_amplitude": "default_movement_amplitude",
    "watermark": "default_watermark",
}


def _key_sized(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError("longer than an S3 key")
    return value


_ImageKey = Annotated[StrictStr, AfterValidator(_key_sized)]


class Sidecar(BaseModel):
    """Our own fields of the JSON sidecar as written; the model's fields are checked against its registry entry."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: StrictStr | None = None
    prompt: StrictStr | None = None
    end_image: _ImageKey | None = None
    extra_images: Annotated[list[_ImageKey], Field(max_length=MAX_EXTRA_IMAGES)] = []
    output_name: Annotated[StrictStr, Field(pattern=_SAFE_NAME.pattern)] | None = None
    tags: Annotated[
        dict[Annotated[StrictStr, Field(max_length=MAX_TAG_NAME_CHARS)], Annotated[StrictStr, Field(max_length=256)]],
        Field(max_length=MAX_TAGS),
    ] = {}


# The flat fields a VideoRequest had before models were chosen per image: an execution started by the older code
# carries them, and keeps them as options.
_BEFORE_MODELS = ("movement_amplitude", "seed", "bgm", "audio", "voice_id", "watermark", "off_peak")


class VideoRequest(BaseModel):
    """What a job asks for: the model, its fields as the sidecar named them, and our own (end frame, extra images,
    output name, tags). `options` holds the model's fields other than prompt, duration and resolution."""

    model_config = ConfigDict(frozen=True)

    model: str = DEFAULT_MODEL
    prompt: str = ""
    duration: int
    resolution: str = ""
    end_image: str | None = None
    extra_images: tuple[str, ...] = ()
    output_name: str | None = None
    tags: dict[str, str] = {}
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _options_kept(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(name in data for name in _BEFORE_MODELS):
            data = dict(data)
            moved = {name: data.pop(name) for name in _BEFORE_MODELS if name in data}
            data["options"] = {**{k: v for k, v in moved.items() if v is not None}, **data.get("options", {})}
        return data

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def off_peak(self) -> bool:
        """The model's cheap, slow tier (Vidu's off_peak, Seedance's flex): it may start or end hours later."""
        tier = self.spec.slow_tier
        return tier is not None and self.options.get(tier[0]) == tier[1]

    def values(self) -> dict[str, Any]:
        """Every model field of the request, by its sidecar name."""
        own = {"prompt": self.prompt or None, "duration": self.duration, "resolution": self.resolution or None}
        return {**own, **self.options}

    def provider_body(self, image: object, end_image: object = None, extra_images: tuple[object, ...] = ()) -> dict[str, Any]:
        """The submit body for the model: only the fields it knows, where and as it takes them."""
        return self.spec.body(self.values(), image, end_image, extra_images)

    def for_notice(self) -> dict[str, Any]:
        shown = self.model_dump(exclude={"tags", "options"}, exclude_none=True, mode="json")
        shown.update(self.options)
        return {name: value for name, value in shown.items() if value is not None and value != ""}


def _show(value: Any) -> str:
    """A value as the user wrote it in JSON, shortened, and always sendable."""
    return shorten(sendable(json.dumps(value, ensure_ascii=False)))


def _describe(error: Any, data: dict[str, Any]) -> str:
    """One of pydantic's errors on our own fields, in the field's words."""
    loc = [str(part) for part in error["loc"]]
    field = loc[0] if loc else "sidecar"
    where = shorten(sendable(".".join(loc)))
    return f'"{where}" must be {OWN_RULES.get(field, "valid")}; got {_show(error.get("input", data.get(field)))}'


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


def _no_constant(name: str) -> Any:
    """NaN and Infinity: Python reads them, but they are not JSON, and no model takes them (NaN passes every range)."""
    raise ValueError(f"{name} is not a JSON number")


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
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=_no_constant)
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


def _prompt_problems(prompt: str, max_chars: int = 2000) -> list[str]:
    """A prompt must hold visible text: no control characters, not only spaces and invisible format characters."""
    for position, char in enumerate(prompt):
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            return [
                f'"prompt" holds the control character U+{ord(char):04X} at position {position}; '
                "a prompt is plain text (line breaks and tabs are fine)"
            ]
    rule = f"a non-empty string of at most {max_chars} characters"
    if not prompt.strip():
        return [f'"prompt" must be {rule}; it is empty']
    if not has_visible_text(prompt):
        invisible = " ".join(dict.fromkeys(f"U+{ord(char):04X}" for char in prompt if not char.isspace()))
        return [f'"prompt" has no visible text, only invisible characters ({invisible}); it must be {rule}']
    length = len(prompt.strip())
    if length > max_chars:
        return [f'"prompt" must be {rule}; it has {length} characters']
    return []


def parse_sidecar(raw: bytes, key: str, settings: Settings) -> VideoRequest:
    """Parse a `.json` or `.txt` sidecar into a VideoRequest for its model, with the stack defaults applied.

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
    data = _without_bad_names(data)
    spec = _chosen_model(data, settings, problems)
    sidecar = None
    try:
        sidecar = Sidecar.model_validate({name: data[name] for name in ("prompt", *OWN_FIELDS) if name in data})
    except ValidationError as exc:
        problems += _validation_problems(exc, data)
    request = None
    if spec is not None:
        prompt = data.get("prompt")
        prompt_field = spec.field("prompt")
        if isinstance(prompt, str) and not _SURROGATE.search(prompt) and (prompt.strip() or (prompt_field and prompt_field.required)):
            problems += _prompt_problems(prompt, prompt_field.max_chars or 0 if prompt_field else 0)
        elif prompt is not None and not isinstance(prompt, str):
            limit = prompt_field.max_chars if prompt_field else 2000
            problems.append(f'"prompt" must be a non-empty string of at most {limit} characters; got {_show(prompt)}')
        elif prompt is None and prompt_field and prompt_field.required:
            problems.append(f'"prompt" is required for {spec.name}: a non-empty string of at most {prompt_field.max_chars} characters')
        values = _model_values(spec, data, settings, problems)
        problems += _image_field_problems(spec, data)
        if sidecar is not None and not problems:
            request = _to_request(spec, sidecar, values)
    if sidecar is not None:
        problems += _output_name_problems(sidecar.output_name)
    if problems:
        raise InvalidSidecar(f"{key}: {_listed(problems, spec)}")
    assert request is not None
    return request


def _chosen_model(data: dict[str, Any], settings: Settings, problems: list[str]) -> ModelSpec | None:
    """The model the sidecar names (or the stack's DefaultModel); None, with the problem said, when it cannot be used."""
    name = data.get("model", settings.default_model)
    if not isinstance(name, str):
        problems.append(f'"model" must be {OWN_RULES["model"]}; got {_show(name)}')
        return None
    allowed = settings.allowed_model_names
    if name not in MODELS:
        near = [model for model in closest_models(name) if model in allowed]
        hint = f"; did you mean {' or '.join(_show(model) for model in near)}?" if near else ""
        problems.append(
            f'"model" {_show(name)} is not a Novita image-to-video model this stack knows{hint} (allowed: {", ".join(allowed)})'
        )
        return None
    if name not in allowed:
        problems.append(f'"model" {_show(name)} is not allowed on this stack (AllowedModels: {", ".join(allowed)})')
        return None
    return MODELS[name]


def _model_values(spec: ModelSpec, data: dict[str, Any], settings: Settings, problems: list[str]) -> dict[str, Any]:
    """The model's fields: given, else the stack's default where the model accepts it, else the model's own default."""
    values: dict[str, Any] = {}
    from_stack: set[str] = set()
    for name, value in data.items():
        if name in OWN_FIELDS or name == "prompt":
            continue
        field = spec.field(name)
        if field is None:
            problems.append(_not_a_field(spec, name))
            continue
        checked, problem = field.check(value)
        if problem:
            problems.append(f'"{name}" must be {problem}{"" if "; it has" in problem else f"; got {_show(value)}"} ({spec.name})')
        else:
            values[name] = checked
    for field in spec.fields:
        if field.name in values or field.name in data or field.name == "prompt":
            continue
        stack_default = getattr(settings, STACK_DEFAULTS.get(field.name, ""), None)
        checked, problem = field.check(stack_default) if stack_default is not None else (None, "no stack default")
        if problem is None:
            values[field.name] = checked
            from_stack.add(field.name)
        elif field.default is not None:
            values[field.name] = field.default
        elif field.required:
            problems.append(f'"{field.name}" is required for {spec.name}: {field.rule()}')
    _stack_defaults_that_fit(spec, values, from_stack)
    for rule in spec.together:
        name, value = rule.when
        if values.get(name) == value and values.get(rule.field) not in rule.allowed:
            allowed = " or ".join(json.dumps(spelled(choice)) for choice in rule.allowed)
            got = _show(spelled(values.get(rule.field)))
            problems.append(f'"{rule.field}" must be {allowed} when "{name}" is {json.dumps(value)} ({spec.name}); got {got}')
    return values


def _stack_defaults_that_fit(spec: ModelSpec, values: dict[str, Any], from_stack: set[str]) -> None:
    """A stack default that breaks one of the model's rules across fields (Hailuo: 10 s clips are 768P only) gives
    way to the model's own default: the user asked for neither, so neither is refused."""
    for rule in spec.together:
        name, value = rule.when
        if values.get(name) != value or values.get(rule.field) in rule.allowed:
            continue
        for filled in (rule.field, name):
            field = spec.field(filled)
            if filled in from_stack and field is not None and field.default is not None:
                values[filled] = field.default
                break


def _not_a_field(spec: ModelSpec, name: str) -> str:
    """An unknown field, or one another model takes: say which."""
    takers = models_taking(name)
    if takers:
        return f'"{shorten(sendable(name))}" is not a field of {spec.name}; it is taken by {", ".join(takers)}'
    import difflib  # only for a sidecar with an unknown field: no handler pays for it at cold start

    hint = difflib.get_close_matches(name, [*spec.by_name, *OWN_FIELDS], n=1, cutoff=0.6)
    suggestion = f'; did you mean "{hint[0]}"?' if hint else ""
    return f"unknown field {_show(name)}{suggestion}"


def _image_field_problems(spec: ModelSpec, data: dict[str, Any]) -> list[str]:
    """The end frame and extra images, where the model takes them."""
    problems = []
    if data.get("end_image") is not None and not spec.end_image_path:
        problems.append(f'"end_image" is not a field of {spec.name}; it is taken by {", ".join(models_taking("end_image"))}')
    if spec.end_image_required and data.get("end_image") is None:  # absent, or null
        problems.append(f'"end_image" is required for {spec.name}: {OWN_RULES["end_image"]}')
    extra = data.get("extra_images")
    if extra and not spec.max_extra_images:
        problems.append(f'"extra_images" is not a field of {spec.name}; it is taken by {", ".join(models_taking("extra_images"))}')
    return problems


# A notice must stay far below SNS's 256 KiB: a sidecar of 10,000 unknown fields is told about the first few.
MAX_PROBLEMS_LISTED = 10


def _listed(problems: list[str], spec: ModelSpec | None) -> str:
    unique = list(dict.fromkeys(problems))
    shown = unique[:MAX_PROBLEMS_LISTED]
    if len(unique) > len(shown):
        shown.append(f"and {len(unique) - len(shown)} more problems")
    if any(problem.startswith("unknown field") for problem in unique):
        known = [*spec.by_name, *_own_fields_of(spec)] if spec else all_field_names()
        shown.append(f"known fields{f' for {spec.name}' if spec else ''}: {', '.join(known)}")
    return "; ".join(shown)


def _own_fields_of(spec: ModelSpec) -> list[str]:
    skip = {"end_image"} if not spec.end_image_path else set()
    skip |= {"extra_images"} if not spec.max_extra_images else set()
    return [name for name in OWN_FIELDS if name not in skip]


def _validation_problems(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    # a field whose name or value holds a lone surrogate is already reported as invalid Unicode
    def already_reported(error: Any) -> bool:
        texts = [str(part) for part in error["loc"]] + ([error["input"]] if isinstance(error.get("input"), str) else [])
        return any(_SURROGATE.search(text) for text in texts)

    # the prompt's own checks say more than "must be a string"; the model's checks speak for it
    errors = [error for error in exc.errors() if not already_reported(error) and error["loc"][:1] != ("prompt",)]
    return [_describe(error, data) for error in errors]


def _output_name_problems(output_name: str | None) -> list[str]:
    if output_name is None:
        return []
    stem = _without_mp4(output_name)
    hidden = any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in output_name)
    if hidden or ".." in output_name or not has_visible_text(stem) or stem.strip() in ("", "."):
        return [f'"output_name" must be {OWN_RULES["output_name"]}; got {_show(output_name)}']
    return []


def _without_mp4(output_name: str) -> str:
    """The name the video gets `.mp4` added to: a user's own `.mp4` suffix (any case) is not doubled."""
    return output_name[:-4] if output_name.lower().endswith(".mp4") else output_name


def default_request(settings: Settings) -> VideoRequest:
    """The request for an image with no sidecar when the stack has a default prompt: the default model's."""
    spec = MODELS[settings.default_model]
    prompt_field = spec.field("prompt")
    problems = _prompt_problems(settings.default_prompt, prompt_field.max_chars or 0 if prompt_field else 2000)
    values = _model_values(spec, {}, settings, problems)
    if problems:
        raise InvalidSidecar(f"the stack's DefaultPrompt: {'; '.join(problems)}")
    return _to_request(spec, Sidecar(prompt=settings.default_prompt), values)


def _to_request(spec: ModelSpec, sidecar: Sidecar, values: dict[str, Any]) -> VideoRequest:
    output_name = _without_mp4(sidecar.output_name) if sidecar.output_name else None
    options = {name: value for name, value in values.items() if name not in ("duration", "resolution")}
    return VideoRequest(
        model=spec.name,
        prompt=(sidecar.prompt or "").strip(),
        duration=values.get("duration", 0),
        resolution=values.get("resolution", ""),
        end_image=sidecar.end_image,
        extra_images=tuple(sidecar.extra_images),
        output_name=output_name or None,
        tags=sidecar.tags,
        options=options,
    )
