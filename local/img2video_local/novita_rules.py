"""What each Novita image-to-video endpoint accepts, written from its API reference on its own (never from the
pipeline's registry), so that a mistake in either shows as a failing test.

Source: ../shared/novita-image-to-video-models.md. Each endpoint is a table keyed by the field's path in the request
body (dotted when nested), in the provider's own names, types and spellings. Where the reference is silent, the
emulator is strict the way the pipeline promises to be (a field the page does not list is refused; images whose
limits are not documented must be JPEG or PNG, at most 10 MB, 300 to 6000 pixels a side, aspect 1:2.5 to 2.5:1).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class Rule:
    kind: type | tuple[type, ...]
    required: bool = False
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    max_len: int | None = None


@dataclass(frozen=True)
class Picture:
    """Image limits as the reference states them (bytes as "MB" = 10^6, except Vidu's 50 MB)."""

    formats: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP"})
    max_bytes: int = 50 * 1024 * 1024
    shortest: int = 1
    longest: int = 100_000
    ratio: float = 4.0
    opaque: bool = False  # no alpha channel


@dataclass(frozen=True)
class Endpoint:
    rules: dict[str, Rule]
    image_paths: tuple[str, ...]  # where images are, first frame first ("images" = a list)
    images_min: int = 1
    images_max: int = 1
    inline: bool = True  # data: URIs accepted
    picture: Picture = Picture()
    same_aspect: float = 0.0  # first and last frame aspect ratios within this factor
    output_short_side: int = 720  # when the body names no resolution
    output_seconds: int = 5
    checks: tuple[Any, ...] = field(default=())

    @property
    def has_end_frame(self) -> bool:
        """The second image is the last frame (not another reference image, as in Vidu's img2video list)."""
        return len(self.image_paths) > 1 or self.images_min == 2


def _b(**more: Any) -> Rule:
    return Rule(bool, **more)


def _i(**more: Any) -> Rule:
    return Rule(int, **more)


def _s(**more: Any) -> Rule:
    return Rule(str, **more)


_VIDU = {
    "prompt": _s(required=True, max_len=2000),
    "duration": _i(low=1, high=10),
    "resolution": _s(values=("540p", "720p", "1080p")),
    "movement_amplitude": _s(values=("auto", "small", "medium", "high")),
    "seed": _i(),
    "bgm": _b(),
    "audio": _b(),
    "off_peak": _b(),
    "watermark": _b(),
    "voice_id": _s(),
}
_UNSTATED = Picture(formats=frozenset({"JPEG", "PNG"}), max_bytes=10_000_000, shortest=300, longest=6000, ratio=2.5)


def _hailuo_ten_seconds(body: dict[str, Any]) -> str | None:
    if body.get("duration") == 10 and body.get("resolution", "768P") != "768P":
        return "10 s videos are 768P only"
    return None


def _wan22_eight_seconds(body: dict[str, Any]) -> str | None:
    parameters = body.get("parameters") or {}
    if parameters.get("duration") == 8 and parameters.get("resolution") == "1080P":
        return "8 s videos are 480P or 720P only"
    return None


_HAILUO = {
    "prompt": _s(required=True, max_len=2000),
    "duration": _i(values=(6, 10)),
    "resolution": _s(values=("768P", "1080P")),
    "enable_prompt_expansion": _b(),
    "fast_pretreatment": _b(),
}

ENDPOINTS: dict[str, Endpoint] = {
    "vidu-q2-turbo-img2video": Endpoint(_VIDU, ("images",), images_max=11),
    "vidu-q2-pro-img2video": Endpoint(_VIDU, ("images",), images_max=11),
    "vidu-q2-pro-fast-img2video": Endpoint({**_VIDU, "resolution": _s(values=("720p", "1080p"))}, ("images",), images_max=11),
    "vidu-q2-turbo-startend2video": Endpoint(
        {
            "prompt": _s(max_len=2000),
            "duration": _i(low=1, high=8),
            "resolution": _s(values=("540p", "720p", "1080p")),
            "movement_amplitude": _s(values=("auto", "small", "medium", "large")),
            "seed": _i(),
            "bgm": _b(),
            "is_rec": _b(),
            "watermark": _b(),
            "wm_position": _i(values=(1, 2, 3, 4)),
            "off_peak": _b(),
        },
        ("images",),
        images_min=2,
        images_max=2,
        same_aspect=1.25,
    ),
    "kling-2.5-turbo-i2v": Endpoint(
        {
            "image": _s(required=True),
            "prompt": _s(required=True, max_len=2500),
            "duration": _s(values=("5", "10")),
            "cfg_scale": Rule((int, float), low=0, high=1),
            "mode": _s(values=("pro",)),
            "negative_prompt": _s(max_len=2500),
        },
        ("image",),
        inline=False,
        picture=Picture(formats=frozenset({"JPEG", "PNG"}), max_bytes=10_000_000, shortest=300),
        output_short_side=1080,
    ),
    "kling-v2.1-i2v": Endpoint(
        {
            "image": _s(required=True),
            "prompt": _s(required=True, max_len=2500),
            "mode": _s(values=("Standard", "Professional")),
            "duration": _s(values=("5", "10")),
            "guidance_scale": Rule((int, float), low=0, high=1),
            "negative_prompt": _s(max_len=2500),
        },
        ("image",),
        inline=False,
        picture=Picture(formats=frozenset({"JPEG", "PNG"}), max_bytes=10_000_000, shortest=300),
        output_short_side=720,  # Standard; Professional makes 1080p (output_of)
    ),
    "minimax-hailuo-02": Endpoint(
        {**_HAILUO, "image": _s(), "end_image": _s()},
        ("image", "end_image"),
        picture=_UNSTATED,
        output_short_side=768,
        output_seconds=6,
        checks=(_hailuo_ten_seconds,),
    ),
    "minimax-hailuo-2.3-i2v": Endpoint(
        {**_HAILUO, "image": _s(required=True)},
        ("image",),
        picture=_UNSTATED,
        output_short_side=768,
        output_seconds=6,
        checks=(_hailuo_ten_seconds,),
    ),
    "seedance-v1-pro-i2v": Endpoint(
        {
            "prompt": _s(max_len=2000),
            "image": _s(required=True),
            "last_image": _s(),
            "resolution": _s(required=True, values=("480p", "720p", "1080p")),
            "aspect_ratio": _s(values=("21:9", "16:9", "4:3", "1:1", "3:4", "9:16")),
            "camera_fixed": _b(),
            "seed": _i(low=-1, high=MAX_SEED),
            "duration": _i(values=(5, 10)),
        },
        ("image", "last_image"),
        picture=Picture(max_bytes=30_000_000, shortest=301, longest=5999, ratio=2.5),
    ),
    "seedance-v1.5-pro-i2v": Endpoint(
        {
            "fps": _i(values=(24,)),
            "seed": _i(low=-1, high=4294967295),
            "image": _s(required=True),
            "ratio": _s(values=("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")),
            "prompt": _s(required=True),
            "duration": _i(low=4, high=12),
            "watermark": _b(),
            "last_image": _s(),
            "resolution": _s(values=("480p", "720p")),
            "camera_fixed": _b(),
            "service_tier": _s(values=("default", "flex")),
            "generate_audio": _b(),
            "execution_expires_after": _i(low=3600, high=259200),
        },
        ("image", "last_image"),
        picture=Picture(max_bytes=30_000_000 - 1, shortest=301, longest=5999, ratio=2.5),
    ),
    "wan2.6-i2v": Endpoint(
        {
            "input": Rule(dict, required=True),
            "input.prompt": _s(max_len=2000),
            "input.img_url": _s(required=True),
            "input.negative_prompt": _s(max_len=500),
            "parameters": Rule(dict),
            "parameters.seed": _i(low=0, high=MAX_SEED),
            "parameters.audio": _b(),
            "parameters.duration": _i(values=(5, 10, 15)),
            "parameters.shot_type": _s(values=("single", "multi")),
            "parameters.watermark": _b(),
            "parameters.resolution": _s(values=("720P", "1080P")),
            "parameters.prompt_extend": _b(),
        },
        ("input.img_url",),
        picture=Picture(max_bytes=10_000_000, shortest=360, longest=2000, opaque=True),
        output_short_side=1080,
    ),
    "wan-2.2-i2v": Endpoint(
        {
            "input": Rule(dict, required=True),
            "input.prompt": _s(required=True, max_len=800),
            "input.negative_prompt": _s(max_len=500),
            "input.img_url": _s(required=True),
            "parameters": Rule(dict, required=True),
            "parameters.resolution": _s(required=True, values=("480P", "720P", "1080P")),
            "parameters.duration": _i(values=(5, 8)),
            "parameters.prompt_extend": _b(),
            "parameters.seed": _i(low=0, high=MAX_SEED),
        },
        ("input.img_url",),
        inline=False,
        picture=Picture(max_bytes=10_000_000, shortest=360, longest=2000, opaque=True),
        checks=(_wan22_eight_seconds,),
    ),
    "wan2.7-i2v": Endpoint(
        {
            "image_url": _s(required=True),
            "last_frame_url": _s(),
            "prompt": _s(max_len=5000),
            "negative_prompt": _s(max_len=500),
            "duration": _i(low=2, high=15),
            "resolution": _s(values=("720P", "1080P")),
            "prompt_extend": _b(),
            "watermark": _b(),
            "seed": _i(low=0, high=MAX_SEED),
        },
        ("image_url", "last_frame_url"),
        inline=False,
        picture=Picture(max_bytes=20_000_000, shortest=240, longest=8000, ratio=8.0, opaque=True),
        output_short_side=1080,
    ),
}


def _get(body: dict[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def image_references(endpoint: Endpoint, body: dict[str, Any]) -> list[str]:
    """The images a valid body refers to, first frame first."""
    if endpoint.image_paths == ("images",):
        return list(body["images"])
    return [value for path in endpoint.image_paths if isinstance(value := _get(body, path), str)]


def validate_body(model: str, body: Any) -> str | None:
    """The endpoint's field validation; the first problem's message, or None."""
    endpoint = ENDPOINTS[model]
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for check in (_unknown_fields, _images, _fields):
        problem = check(endpoint, body)
        if problem:
            return problem
    for rule in endpoint.checks:
        found: str | None = rule(body)
        if found:
            return found
    return _extra(body)


def _unknown_fields(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    known = {*endpoint.rules, "extra", *(("images",) if endpoint.image_paths == ("images",) else ())}
    unknown = [name for name in body if name not in known]
    for name, value in body.items():
        if name in endpoint.rules and endpoint.rules[name].kind is dict and isinstance(value, dict):
            unknown += [f"{name}.{inner}" for inner in value if f"{name}.{inner}" not in known]
    return f"unknown field(s): {', '.join(sorted(unknown))}" if unknown else None


def _images(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    if endpoint.image_paths == ("images",):
        images = body.get("images")
        if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
            return "images is required: an array of image URLs"
        if not endpoint.images_min <= len(images) <= endpoint.images_max:
            wanted = (
                endpoint.images_min if endpoint.images_min == endpoint.images_max else f"{endpoint.images_min} to {endpoint.images_max}"
            )
            return f"images must hold {wanted} images; got {len(images)}"
    else:
        images = [value for path in endpoint.image_paths if (value := _get(body, path)) is not None]
    for image in images:
        if not isinstance(image, str):
            continue  # the field's own rule says it must be a string
        if image.startswith("data:"):
            if not endpoint.inline:
                return "images must be public URLs"
            if not image.startswith("data:image/") or ";base64," not in image:
                return "an inline image must be a data:image/<type>;base64,... URI"
        elif not image.startswith(("http://", "https://")):
            return "images must be URLs or data:image/...;base64 URIs"
    return None


def _fields(endpoint: Endpoint, body: dict[str, Any]) -> str | None:
    for path, rule in endpoint.rules.items():
        value: Any = _get(body, path)
        if value is None:
            if rule.required:
                return f"{path} is required"
            continue
        if not _typed(value, rule):
            return f"{path} has the wrong type"
        if rule.values and value not in rule.values:
            return f"{path} must be one of {', '.join(map(str, rule.values))}"
        if (rule.low is not None and value < rule.low) or (rule.high is not None and value > rule.high):
            return f"{path} must be between {rule.low} and {rule.high}"
        if rule.max_len is not None and len(value) > rule.max_len:
            return f"{path} must be at most {rule.max_len} characters"
        if rule.kind is str and path in ("prompt",) and rule.required and not value.strip():
            return f"{path} is required"
    return None


def _typed(value: Any, rule: Rule) -> bool:
    """JSON's true is not a number here, as it is not in Novita's schema."""
    return isinstance(value, rule.kind) and not (isinstance(value, bool) and rule.kind is not bool)


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


def image_problem(model: str, images: list[bytes]) -> str | None:
    """What the provider says of images outside the endpoint's limits, as a task's failure reason (it is paid)."""
    endpoint = ENDPOINTS[model]
    picture = endpoint.picture
    shapes = []
    for data in images:
        if len(data) > picture.max_bytes:
            return f"IMAGE_FILE_EXCEEDS_MAX_SIZE: {len(data)} bytes"
        opened = Image.open(io.BytesIO(data))
        if opened.format not in picture.formats:
            return f"INVALID_IMAGE_FORMAT: {opened.format}"
        if picture.opaque and ("A" in opened.getbands() or "transparency" in opened.info):
            return "INVALID_IMAGE_FORMAT: the image has an alpha channel"
        width, height = opened.size
        if min(width, height) < picture.shortest or max(width, height) > picture.longest:
            return f"INVALID_IMAGE_SIZE: {width}x{height}"
        if max(width, height) > picture.ratio * min(width, height):
            return f"INVALID_IMAGE_SIZE: aspect ratio {width}x{height}"
        shapes.append(width / height)
    if endpoint.same_aspect and len(shapes) == 2 and not 1 / endpoint.same_aspect <= shapes[0] / shapes[1] <= endpoint.same_aspect:
        return "INVALID_IMAGE_SIZE: the start and end frames' aspect ratios differ too much"
    return None


def output_of(model: str, body: dict[str, Any]) -> tuple[int, int]:
    """The short side (pixels) and seconds of the video the endpoint makes for this body."""
    endpoint = ENDPOINTS[model]
    resolution = next((_get(body, path) for path in ("resolution", "parameters.resolution") if _get(body, path)), None)
    short = int(str(resolution).lower().rstrip("p")) if resolution else endpoint.output_short_side
    if body.get("mode") == "Professional":  # Kling 2.1's mode sets its output: 720p Standard, 1080p Professional
        short = 1080
    duration = next((_get(body, path) for path in ("duration", "parameters.duration") if _get(body, path) is not None), None)
    return short, int(duration) if duration is not None else endpoint.output_seconds
