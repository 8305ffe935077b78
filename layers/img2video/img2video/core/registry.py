"""The Novita image-to-video models the pipeline can use: one entry each, with every rule its reference states.

Facts come from ../shared/novita-image-to-video-models.md (the section is named in each entry's `source`). Where the
reference is silent (n/d), the entry takes the conservative rule and says so in `notes`: the smallest limits any
Novita image-to-video model documents, images by URL only, a field left out rather than guessed.

A sidecar speaks one language for all models: `duration` (an integer of seconds), `resolution` ("768p", in lower case
for every model; it is sent as the model spells it, "768P"), `seed`, `audio`, `aspect_ratio`, `prompt_extend`, `negative_prompt`,
and `end_image` (a key beside the image, like `extra_images`). Each entry maps those names to where its model takes
them (`path`, dotted for nested bodies), in the type it takes them (`wire`: Kling's duration is a string).

Adding a model: one `ModelSpec` below, its rules in the emulator (local/img2video_local/novita_rules.py, written from
the reference on its own) and its tests; CONTRIBUTING.md says how.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_MODEL = "vidu-q2-turbo-img2video"

Kind = Literal["int", "number", "bool", "str"]
ImageFormat = Literal["jpeg", "png", "webp"]

MB = 1000 * 1000  # the references' "MB"; 50 MB stays 50 * 1024 * 1024 where the pipeline always had it
MAX_SEED = 2147483647


@dataclass(frozen=True)
class Field:
    """One sidecar field of a model: what it accepts (in sidecar terms) and where the model takes it."""

    name: str
    kind: Kind
    path: str = ""  # where in the request body; the sidecar name when empty
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_chars: int | None = None
    default: Any = None  # the reference's default; None: not documented, and not sent unless given
    required: bool = False  # the model needs it; a stack default may fill it
    wire: Literal["", "str"] = ""  # "str": sent as a string ("5"), as Kling takes its duration
    unit: str = ""
    note: str = ""

    @property
    def where(self) -> str:
        return self.path or self.name

    def rule(self) -> str:
        """What the field accepts, in the words a failure notice uses."""
        unit = f" {self.unit}" if self.unit else ""
        if self.choices:
            shown = [json.dumps(spelled(choice)) for choice in self.choices]
            if len(shown) > 2:
                return f"one of {', '.join(shown)}{unit}"
            return f"{' or '.join(shown)}{unit}"
        if self.kind == "bool":
            return "a JSON boolean, true or false"
        if self.kind in ("int", "number"):
            noun = "an integer" if self.kind == "int" else "a number"
            noun += f" number of{unit}" if unit and self.kind == "int" else ""
            low = _number(self.minimum)
            high = _number(self.maximum)
            return f"{noun} from {low} to {high}" if high else f"{noun} of at least {low}"
        limit = f" of at most {self.max_chars} characters" if self.max_chars else ""
        return f"a non-blank string{limit}"

    def check(self, value: Any) -> tuple[Any, str | None]:
        """The value as the model takes it, or a problem (what is wrong, in the field's words)."""
        if self.kind == "bool":
            return value, None if isinstance(value, bool) else self.rule()
        if self.kind == "int" and (type(value) is not int):
            return value, self.rule()
        if self.kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
            return value, self.rule()
        if self.kind == "str":
            if not isinstance(value, str) or not value.strip():
                return value, self.rule()
            if self.choices:
                by_sidecar = {spelled(choice): choice for choice in self.choices}
                if value not in by_sidecar:
                    return value, self.rule()
                value = by_sidecar[value]
            if self.max_chars is not None and len(value) > self.max_chars:
                return value, f"{self.rule()}; it has {len(value)} characters"
        if self.choices and value not in self.choices:
            return value, self.rule()
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return value, self.rule()
        return value, None

    def wired(self, value: Any) -> Any:
        return str(value) if self.wire == "str" else value


def spelled(choice: Any) -> Any:
    """A value as a sidecar writes it: one spelling for every model ("768p"), whatever case the model takes it in."""
    return choice.lower() if isinstance(choice, str) else choice


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class ImageRules:
    """What the model takes as an image (each of the first frame, the end frame and extra images)."""

    formats: tuple[ImageFormat, ...] = ("jpeg", "png", "webp")
    max_bytes: int = 50 * 1024 * 1024
    min_side: int = 128
    max_side: int = 16384
    max_aspect: float = 4.0  # 4: from 1:4 to 4:1
    no_alpha: bool = False  # an image with transparency (a PNG or WebP alpha channel) is refused
    inline: bool = True  # takes data:image/...;base64 URIs (else presigned URLs only)

    def describe(self) -> str:
        kinds = ", ".join(kind.upper() for kind in self.formats)
        alpha = " without transparency" if self.no_alpha else ""
        aspect = f"{_number(self.max_aspect)}"
        return (
            f"{kinds}{alpha}, at most {_bytes_text(self.max_bytes)}, {self.min_side} to {self.max_side} pixels on each side, "
            f"aspect ratio from 1:{aspect} to {aspect}:1"
        )


def _bytes_text(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MB"
    return f"{size / MB:g} MB"


@dataclass(frozen=True)
class Together:
    """A rule across fields: when `when` holds, `field` must be one of `allowed`."""

    when: tuple[str, Any]
    field: str
    allowed: tuple[Any, ...]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    source: str  # section of ../shared/novita-image-to-video-models.md
    image_path: str  # where the first frame goes: "images" (a list), "image", "input.img_url", "image_url"
    fields: tuple[Field, ...]
    image: ImageRules = ImageRules()
    end_image_path: str = ""  # where an end frame goes ("images" = the list's second entry); empty: none
    end_image_required: bool = False
    max_extra_images: int = 0  # more reference images, only where the model takes a list
    end_aspect_tolerance: float = 0.0  # the end frame's aspect ratio within this factor of the first's (0: any)
    together: tuple[Together, ...] = ()
    slow_tier: tuple[str, Any] | None = None  # (field, value) asking for the cheap, slow tier
    resolution_of_output: str = ""  # when the model has no resolution field: what the reference says it makes
    notes: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"/v3/async/{self.name}"

    @property
    def by_name(self) -> dict[str, Field]:
        return {spec.name: spec for spec in self.fields}

    def field(self, name: str) -> Field | None:
        return self.by_name.get(name)

    def body(
        self, values: Mapping[str, Any], image: object, end_image: object = None, extra_images: tuple[object, ...] = ()
    ) -> dict[str, Any]:
        """The submit body: each given value where the model takes it, in the type it takes it."""
        body: dict[str, Any] = {}
        if self.image_path == "images":
            _put(body, "images", [image, *([end_image] if end_image is not None else []), *extra_images])
        else:
            _put(body, self.image_path, image)
            if end_image is not None:
                _put(body, self.end_image_path, end_image)
        for name, value in values.items():
            spec = self.field(name)
            if spec is not None and value is not None:
                _put(body, spec.where, spec.wired(value))
        return body


def _put(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        body = body.setdefault(part, {})
    body[last] = value


# --- the fields, one spelling for one meaning ----------------------------------------------------


def _prompt(max_chars: int, required: bool = True, path: str = "", note: str = "") -> Field:
    return Field("prompt", "str", path=path, max_chars=max_chars, required=required, note=note)


def _duration(choices: tuple[int, ...] = (), low: int = 0, high: int = 0, default: int = 5, path: str = "", wire: str = "") -> Field:
    if choices:
        return Field("duration", "int", path=path, choices=choices, default=default, unit="seconds", wire=wire)  # type: ignore[arg-type]
    return Field("duration", "int", path=path, minimum=low, maximum=high, default=default, unit="seconds")


def _resolution(choices: tuple[str, ...], default: str | None, path: str = "", required: bool = False) -> Field:
    return Field("resolution", "str", path=path, choices=choices, default=default, required=required)


def _seed(low: int = 0, high: int = MAX_SEED, default: int | None = None, path: str = "", note: str = "") -> Field:
    return Field("seed", "int", path=path, minimum=low, maximum=high, default=default, note=note)


def _flag(name: str, default: bool | None = False, path: str = "", note: str = "") -> Field:
    return Field(name, "bool", path=path, default=default, note=note)


def _text(name: str, max_chars: int, path: str = "", note: str = "") -> Field:
    return Field(name, "str", path=path, max_chars=max_chars, note=note)


def _choice(name: str, choices: tuple[Any, ...], default: Any, path: str = "", note: str = "") -> Field:
    kind: Kind = "int" if isinstance(choices[0], int) else "str"
    return Field(name, kind, path=path, choices=choices, default=default, note=note)


_SEED_ND = "range not documented: 0 to 2147483647 taken"

_VIDU_FIELDS = (
    _prompt(2000),
    _duration(low=1, high=10),
    _resolution(("540p", "720p", "1080p"), "720p"),
    _choice("movement_amplitude", ("auto", "small", "medium", "high"), "auto"),
    _seed(note=_SEED_ND),
    _flag("bgm", note="background music"),
    _flag("audio", note="generate audio"),
    _text("voice_id", 200, note="values not documented"),
    _flag("watermark"),
    _flag("off_peak", note="cheaper; may take up to 48 h"),
)
_VIDU_IMAGE = ImageRules()  # the sibling Vidu pages' limits (../shared/novita-vidu-q2-turbo-img2video.md, "Image limits")
_VIDU_NOTES = (
    "Image limits are not stated on this model's page: the sibling Vidu pages' limits are used "
    "(JPEG, PNG or WebP, 50 MB, aspect ratio 1:4 to 4:1).",
    "Seed range not documented: 0 to 2147483647 taken.",
)

# The smallest limits any model here documents: for a model whose page states none.
_UNDOCUMENTED_IMAGE = ImageRules(formats=("jpeg", "png"), max_bytes=10 * MB, min_side=300, max_side=6000, max_aspect=2.5)
_UNDOCUMENTED_IMAGE_NOTE = (
    "Image formats and limits are not documented: the smallest documented for any Novita image-to-video model are "
    "used (JPEG or PNG, 10 MB, 300 to 6000 pixels a side, aspect ratio 1:2.5 to 2.5:1)."
)
_URL_ONLY_NOTE = "Inline (base64) images are not documented: the image is always sent as a presigned URL."
_READABLE_NOTE = "BMP, TIFF and GIF, also listed, are refused: the pipeline reads only JPEG, PNG and WebP headers."

_HAILUO_FIELDS = (
    _prompt(2000),
    _duration(choices=(6, 10), default=6),
    _resolution(("768P", "1080P"), "768P"),
    _flag("prompt_extend", default=True, path="enable_prompt_expansion", note="let the model rewrite the prompt"),
    _flag("fast_pretreatment", note="shorter prompt optimisation"),
)
_HAILUO_TOGETHER = (Together(when=("duration", 10), field="resolution", allowed=("768P",)),)


def _vidu_img2video(name: str, title: str, source: str, fields: tuple[Field, ...] = _VIDU_FIELDS) -> ModelSpec:
    """The Vidu Q2 image-to-video models: one field set (Pro Fast drops 540p), a list of images, the off-peak tier."""
    return ModelSpec(
        name,
        title,
        source,
        image_path="images",
        fields=fields,
        image=_VIDU_IMAGE,
        max_extra_images=10,
        slow_tier=("off_peak", True),
        notes=_VIDU_NOTES,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _vidu_img2video("vidu-q2-turbo-img2video", "Vidu Q2 Turbo", "§2"),
        _vidu_img2video("vidu-q2-pro-img2video", "Vidu Q2 Pro", "§3"),
        _vidu_img2video(
            "vidu-q2-pro-fast-img2video",
            "Vidu Q2 Pro Fast",
            "§3",
            fields=tuple(_resolution(("720p", "1080p"), "720p") if spec.name == "resolution" else spec for spec in _VIDU_FIELDS),
        ),
        ModelSpec(
            "vidu-q2-turbo-startend2video",
            "Vidu Q2 Turbo, start and end frames",
            "§11",
            image_path="images",
            end_image_path="images",
            end_image_required=True,
            end_aspect_tolerance=1.25,
            fields=(
                _prompt(2000, required=False),
                _duration(low=1, high=8),
                _resolution(("540p", "720p", "1080p"), "720p"),
                _choice("movement_amplitude", ("auto", "small", "medium", "large"), "auto"),
                _seed(note="0 or absent: random; range not documented, 0 to 2147483647 taken"),
                _flag("bgm", note="background music"),
                _flag("is_rec", note="a recommended prompt replaces yours; costs 10 extra credits"),
                _flag("watermark"),
                _choice("wm_position", (1, 2, 3, 4), 3, note="1 top-left, 2 top-right, 3 bottom-right, 4 bottom-left"),
                _flag("off_peak", note="cheaper; done within 48 h"),
            ),
            image=ImageRules(),
            slow_tier=("off_peak", True),
            notes=(
                'Takes exactly two images: the image and its "end_image"; their aspect ratios may differ by at most 1.25×.',
                "Fields after off_peak come from the sister docs (the Novita page's excerpt stops before them).",
                "wm_url, payload and meta_data are not offered.",
            ),
        ),
        ModelSpec(
            "kling-2.5-turbo-i2v",
            "Kling 2.5 Turbo",
            "§4",
            image_path="image",
            fields=(
                _prompt(2500),
                _duration(choices=(5, 10), wire="str"),
                Field("cfg_scale", "number", minimum=0.0, maximum=1.0, default=0.5, note="higher: closer to the prompt"),
                _choice("mode", ("pro",), "pro"),
                _text("negative_prompt", 2500),
            ),
            image=ImageRules(formats=("jpeg", "png"), max_bytes=10 * MB, min_side=300, inline=False),
            resolution_of_output="not documented",
            notes=(
                'Duration is sent as a string ("5"), as the model takes it.',
                "Aspect ratio not documented: 1:4 to 4:1 taken.",
                _URL_ONLY_NOTE,
            ),
        ),
        ModelSpec(
            "kling-v2.1-i2v",
            "Kling 2.1",
            "§4b",
            image_path="image",
            fields=(
                _prompt(2500),
                _duration(choices=(5, 10), wire="str"),
                Field(
                    "cfg_scale", "number", path="guidance_scale", minimum=0.0, maximum=1.0, default=0.5, note="higher: closer to the prompt"
                ),
                _choice("mode", ("Standard", "Professional"), "Standard", note="standard: 720p, cheaper; professional: 1080p"),
                _text("negative_prompt", 2500),
            ),
            image=ImageRules(formats=("jpeg", "png"), max_bytes=10 * MB, min_side=300, inline=False),
            resolution_of_output="720p (standard) or 1080p (professional)",
            notes=(
                'Duration is sent as a string ("5"), as the model takes it; cfg_scale is sent as guidance_scale.',
                "Aspect ratio not documented: 1:4 to 4:1 taken.",
                _URL_ONLY_NOTE,
            ),
        ),
        ModelSpec(
            "minimax-hailuo-02",
            "Minimax Hailuo 02",
            "§5",
            image_path="image",
            end_image_path="end_image",
            fields=_HAILUO_FIELDS,
            together=_HAILUO_TOGETHER,
            image=_UNDOCUMENTED_IMAGE,
            notes=("10 s clips are 768P only.", _UNDOCUMENTED_IMAGE_NOTE),
        ),
        ModelSpec(
            "minimax-hailuo-2.3-i2v",
            "Minimax Hailuo 2.3",
            "§5b",
            image_path="image",
            fields=_HAILUO_FIELDS,
            together=_HAILUO_TOGETHER,
            image=_UNDOCUMENTED_IMAGE,
            notes=(
                "10 s clips are 768P only.",
                "The prompt takes bracketed camera commands, e.g. [Pan left].",
                _UNDOCUMENTED_IMAGE_NOTE,
            ),
        ),
        ModelSpec(
            "seedance-v1-pro-i2v",
            "Seedance 1 Pro",
            "§6",
            image_path="image",
            end_image_path="last_image",
            fields=(
                _prompt(2000, required=False),
                _resolution(("480p", "720p", "1080p"), None, required=True),
                _choice("aspect_ratio", ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16"), "16:9"),
                _flag("camera_fixed"),
                _seed(low=-1, default=-1, note="-1: random"),
                _duration(choices=(5, 10)),
            ),
            image=ImageRules(max_bytes=30 * MB, min_side=301, max_side=5999, max_aspect=2.5),
            notes=(
                "Resolution has no default: the stack's DefaultResolution fills it, or the sidecar must.",
                "The older page also lists aspect ratio 9:21; the newer does not, so it is refused.",
                _READABLE_NOTE,
            ),
        ),
        ModelSpec(
            "seedance-v1.5-pro-i2v",
            "Seedance 1.5 Pro",
            "§7",
            image_path="image",
            end_image_path="last_image",
            fields=(
                _prompt(2000, note="the reference recommends at most 500 characters"),
                _duration(low=4, high=12),
                _resolution(("480p", "720p"), "720p"),
                _choice("aspect_ratio", ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"), "adaptive", path="ratio"),
                _choice("fps", (24,), 24),
                _seed(low=-1, high=4294967295, default=-1, note="-1: random"),
                _flag("watermark"),
                _flag("camera_fixed"),
                _choice("service_tier", ("default", "flex"), "default", note="flex: offline, half price, slower"),
                _flag("audio", default=True, path="generate_audio", note="speech, effects and music"),
                Field("execution_expires_after", "int", minimum=3600, maximum=259200, default=172800, unit="seconds"),
            ),
            image=ImageRules(max_bytes=30 * MB - 1, min_side=301, max_side=5999, max_aspect=2.499),  # (0.4, 2.5), open
            slow_tier=("service_tier", "flex"),
            notes=(
                "A task past execution_expires_after is stopped by Novita; how it is reported is not documented "
                "(the job fails when its own wait ends).",
                _READABLE_NOTE,
            ),
        ),
        ModelSpec(
            "wan2.6-i2v",
            "Wan 2.6",
            "§8",
            image_path="input.img_url",
            fields=(
                _prompt(2000, required=False, path="input.prompt"),
                _text("negative_prompt", 500, path="input.negative_prompt"),
                _seed(path="parameters.seed"),
                _flag("audio", default=True, path="parameters.audio"),
                _duration(choices=(5, 10, 15), path="parameters.duration"),
                _choice("shot_type", ("single", "multi"), "multi", path="parameters.shot_type"),
                _flag("watermark", path="parameters.watermark"),
                _resolution(("720P", "1080P"), "1080P", path="parameters.resolution"),
                _flag("prompt_extend", default=True, path="parameters.prompt_extend"),
            ),
            image=ImageRules(formats=("jpeg", "png", "webp"), max_bytes=10 * MB, min_side=360, max_side=2000, no_alpha=True),
            notes=(
                "Aspect ratio not documented: 1:4 to 4:1 taken.",
                "input.template and input.audio_url are not offered.",
                "BMP, also listed, is refused: the pipeline reads only JPEG, PNG and WebP headers.",
            ),
        ),
        ModelSpec(
            "wan-2.2-i2v",
            "Wan 2.2",
            "§8c",
            image_path="input.img_url",
            fields=(
                _prompt(800, path="input.prompt"),
                _text("negative_prompt", 500, path="input.negative_prompt"),
                _resolution(("480P", "720P", "1080P"), None, path="parameters.resolution", required=True),
                _duration(choices=(5, 8), path="parameters.duration"),
                _flag("prompt_extend", default=True, path="parameters.prompt_extend"),
                _seed(path="parameters.seed"),
            ),
            together=(Together(when=("duration", 8), field="resolution", allowed=("480P", "720P")),),
            image=ImageRules(formats=("jpeg", "png", "webp"), max_bytes=10 * MB, min_side=360, max_side=2000, no_alpha=True, inline=False),
            notes=(
                "8 s clips are 480P or 720P only (1080P is 5 s).",
                "Resolution has no default: the stack's DefaultResolution fills it, or the sidecar must.",
                "The older page lists no 720P and no file-size limit; the newer page's rules are used.",
                "Aspect ratio not documented: 1:4 to 4:1 taken. Inline images not documented: URL only.",
                "parameters.loras is not offered; the video is silent.",
            ),
        ),
        ModelSpec(
            "wan2.7-i2v",
            "Wan 2.7",
            "§8b",
            image_path="image_url",
            end_image_path="last_frame_url",
            fields=(
                _prompt(5000, required=False),
                _text("negative_prompt", 500),
                _duration(low=2, high=15),
                _resolution(("720P", "1080P"), "1080P"),
                _flag("prompt_extend", default=None, note="default not documented; sent only when given"),
                _flag("watermark"),
                _seed(),
            ),
            image=ImageRules(
                formats=("jpeg", "png", "webp"), max_bytes=20 * MB, min_side=240, max_side=8000, max_aspect=8.0, no_alpha=True, inline=False
            ),
            notes=(
                _URL_ONLY_NOTE,
                "first_clip_url (video continuation) and driving_audio_url are not offered.",
                "BMP, also listed, is refused: the pipeline reads only JPEG, PNG and WebP headers.",
            ),
        ),
    )
}

# Fields a sidecar may give for any model: ours, not the provider's.
OWN_FIELDS = ("model", "end_image", "extra_images", "output_name", "tags")


def all_field_names() -> list[str]:
    names = dict.fromkeys(OWN_FIELDS)
    for spec in MODELS.values():
        names.update(dict.fromkeys(spec.by_name))
    return list(names)


def models_taking(name: str) -> list[str]:
    """The models whose sidecar takes this field."""
    if name == "end_image":
        return [spec.name for spec in MODELS.values() if spec.end_image_path]
    if name == "extra_images":
        return [spec.name for spec in MODELS.values() if spec.max_extra_images]
    return [spec.name for spec in MODELS.values() if name in spec.by_name]


def closest_models(name: str) -> list[str]:
    """Models whose name holds this one ("kling"), else the nearest spellings."""
    holding = [model for model in MODELS if name and name.lower() in model]
    import difflib  # only for a name that is not a model: no handler pays for it at cold start

    return holding[:3] or difflib.get_close_matches(name, list(MODELS), n=3, cutoff=0.5)
