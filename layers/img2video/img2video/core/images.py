"""Telling an image the provider can animate from bytes that only carry an image suffix, before anything is paid.

The check reads the file's header, never its pixels: the type from the first bytes, the real dimensions
and whether it is animated from the JPEG frame header, the PNG IHDR/acTL chunks or the WebP VP8/VP8L/VP8X
chunk, and its last bytes for truncation. At most three ranged reads, whatever the file's size
(`bench/image_check.py` measures time and memory for the largest image accepted).

Limits and where they come from (the README's image reference repeats them):
- 50 MB per image, aspect ratio 1:4 to 4:1, JPEG/PNG/WebP: the provider's limits
  (../shared/novita-vidu-q2-turbo-img2video.md, "Image limits").
- at least 128 pixels on each side: ours; a smaller image has too little to animate at 540p, the smallest output.
- at most 16384 pixels on a side and 120 megapixels: ours; above any camera's output (a 108 MP phone photo is
  12000×9000), and low enough that a "decompression bomb" (a tiny file declaring 30000×30000) is refused unread.
- still images only: an animated PNG or WebP is refused rather than silently reduced to its first frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from img2video.core.errors import ImageTooLarge, UnsupportedImage
from img2video.core.registry import ImageRules

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # the provider's per-image limit
MIN_SIDE = 128
MAX_SIDE = 16384
MAX_PIXELS = 120_000_000
MAX_ASPECT = 4  # 1:4 to 4:1

FIRST_READ_BYTES = 256 * 1024  # holds the header of nearly every image
HEADER_LIMIT_BYTES = 4 * 1024 * 1024  # one further read may reach this far (big ICC profiles, XMP, PNG text chunks)
TAIL_BYTES = 4096  # the end marker, and room for padding or a short vendor trailer after it
SNIFF_BYTES = 16  # enough to tell JPEG, PNG and WebP apart
MAX_JPEG_SEGMENTS = 2000
MAX_PNG_CHUNKS = 2000

ImageType = Literal["jpeg", "png", "webp"]
Reader = Callable[[int, int], bytes]  # (offset, length) -> those bytes of the object

_ALLOWED = (
    f"images must be {MIN_SIDE} to {MAX_SIDE} pixels on each side, at most {MAX_PIXELS // 1_000_000} megapixels, "
    f"with an aspect ratio from 1:{MAX_ASPECT} to {MAX_ASPECT}:1"
)


@dataclass(frozen=True)
class ImageHeader:
    kind: ImageType
    width: int
    height: int
    animated: bool = False
    alpha: bool = False  # a PNG with an alpha channel or a transparent colour


def sniff_image_type(head: bytes) -> ImageType | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


class _HeaderNotFound(Exception):
    """The bytes end, or the read limit is reached, before the header says what it must."""


class _Refused(Exception):
    """A readable header describing an image the provider is not sent: the text completes "<key> ..."."""


def _read_exactly(read: Reader, offset: int, length: int) -> bytes:
    """Those bytes of the object; fewer than asked means it changed (was overwritten) since it was listed."""
    data = read(offset, length)
    if len(data) < length:
        raise _HeaderNotFound("the file changed while it was read (it is shorter than listed); upload it again")
    return data


class _Window:
    """The object's bytes as far as its header needs them: the first read (kept as `first`), then at most one more."""

    def __init__(self, read: Reader, size: int) -> None:
        self._read, self._size = read, size
        self.first = _read_exactly(read, 0, min(size, FIRST_READ_BYTES))
        self._start, self._data = 0, self.first
        self._reads = 1

    def at(self, offset: int, length: int) -> bytes:
        end = offset + length
        if end > self._size:
            raise _HeaderNotFound("the file ends inside its header")
        if not (self._start <= offset and end <= self._start + len(self._data)):
            if self._reads >= 2 or end > HEADER_LIMIT_BYTES:
                raise _HeaderNotFound(f"no image header within the first {HEADER_LIMIT_BYTES} bytes")
            wanted = min(self._size, HEADER_LIMIT_BYTES) - offset
            self._start, self._data = offset, _read_exactly(self._read, offset, wanted)
            self._reads += 1
        return self._data[offset - self._start : end - self._start]


def _u16be(data: bytes) -> int:
    return int.from_bytes(data[:2], "big")


def _u32be(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


# Start-of-frame markers: the Huffman-coded ones every decoder reads (baseline, extended, progressive), and the
# rest by name (C4, C8 and CC are other segments).
_JPEG_SOF_READABLE = {0xC0, 0xC1, 0xC2}
_JPEG_SOF_OTHER = {
    0xC3: "lossless JPEG",
    **dict.fromkeys((0xC5, 0xC6, 0xC7), "hierarchical JPEG"),
    **dict.fromkeys((0xC9, 0xCA, 0xCB), "arithmetic-coded JPEG"),
    **dict.fromkeys((0xCD, 0xCE, 0xCF), "hierarchical arithmetic-coded JPEG"),
}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _jpeg(window: _Window) -> ImageHeader:
    position = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        if window.at(position, 1) != b"\xff":
            raise _HeaderNotFound(f"a JPEG segment should start at byte {position}")
        marker = window.at(position + 1, 1)[0]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in (0xD9, 0xDA):
            raise _HeaderNotFound("the JPEG's image data starts before its frame header")
        if marker in _JPEG_SOF_OTHER:
            raise _Refused(
                f"is a {_JPEG_SOF_OTHER[marker]} (frame marker 0x{marker:02X}), which few decoders read; export it as a standard JPEG"
            )
        if marker in _JPEG_SOF_READABLE:
            frame = window.at(position + 4, 5)  # precision, height, width
            if frame[0] != 8:
                raise _Refused(f"is a {frame[0]}-bit JPEG; export it as a standard 8-bit JPEG")
            if _u16be(frame[1:3]) == 0:
                raise _Refused("declares its height after the image data (a DNL marker), which few decoders read; export it again")
            return ImageHeader("jpeg", width=_u16be(frame[3:5]), height=_u16be(frame[1:3]))
        length = _u16be(window.at(position + 2, 2))
        if length < 2:
            raise _HeaderNotFound(f"a JPEG segment at byte {position} has length {length}")
        position += 2 + length
    raise _HeaderNotFound(f"no JPEG frame header in the first {MAX_JPEG_SEGMENTS} segments")


def _png(window: _Window) -> ImageHeader:
    if window.at(12, 4) != b"IHDR":
        raise _HeaderNotFound("the PNG does not start with its IHDR chunk")
    ihdr = window.at(16, 10)
    width, height = _u32be(ihdr[:4]), _u32be(ihdr[4:8])
    position, animated, alpha = 8, False, ihdr[9] in (4, 6)  # colour types 4 and 6 carry alpha
    for _ in range(MAX_PNG_CHUNKS):  # chunks before the image data: an acTL chunk there makes it an animated PNG
        length, kind = _u32be(window.at(position, 4)), window.at(position + 4, 4)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"acTL":
            animated = _u32be(window.at(position + 8, 4)) > 1  # num_frames
        alpha = alpha or kind == b"tRNS"
        position += 12 + length
    else:
        raise _HeaderNotFound(f"no PNG image data in the first {MAX_PNG_CHUNKS} chunks")
    return ImageHeader("png", width=width, height=height, animated=animated, alpha=alpha)


def _webp(window: _Window) -> ImageHeader:
    chunk, data = window.at(12, 4), 20
    if chunk == b"VP8X":
        flags, canvas = window.at(data, 1)[0], window.at(data + 4, 6)
        width = int.from_bytes(canvas[:3], "little") + 1
        height = int.from_bytes(canvas[3:], "little") + 1
        return ImageHeader("webp", width=width, height=height, animated=bool(flags & 0x02), alpha=bool(flags & 0x10))
    if chunk == b"VP8 ":
        frame = window.at(data, 10)
        if frame[3:6] != b"\x9d\x01\x2a":
            raise _HeaderNotFound("the WebP's VP8 frame has no start code")
        return ImageHeader(
            "webp", width=int.from_bytes(frame[6:8], "little") & 0x3FFF, height=int.from_bytes(frame[8:10], "little") & 0x3FFF
        )
    if chunk == b"VP8L":
        head = window.at(data, 5)
        if head[0] != 0x2F:
            raise _HeaderNotFound("the WebP's VP8L data has no signature")
        bits = int.from_bytes(head[1:5], "little")  # 14 bits width - 1, 14 bits height - 1, then alpha_is_used
        return ImageHeader("webp", width=(bits & 0x3FFF) + 1, height=((bits >> 14) & 0x3FFF) + 1, alpha=bool(bits >> 28 & 1))
    raise _HeaderNotFound(f"the WebP's first chunk is {chunk!r}, not VP8, VP8L or VP8X")


_PARSERS = {"jpeg": _jpeg, "png": _png, "webp": _webp}


def _read_header(key: str, window: _Window) -> ImageHeader:
    """The image's type, dimensions and animation, from its header; a clear error for anything else."""
    kind = sniff_image_type(window.first[:SNIFF_BYTES])
    if kind is None:
        raise UnsupportedImage(
            f"{key} is not a JPEG, PNG or WebP image (its first bytes are {window.first[:8].hex()}); only those formats are accepted"
        )
    try:
        return _PARSERS[kind](window)
    except _Refused as exc:
        raise UnsupportedImage(f"{key} {exc}") from None
    except _HeaderNotFound as exc:
        raise UnsupportedImage(f"{key} is not a readable {kind.upper()} image: {exc}; export it again as JPEG, PNG or WebP") from None


DEFAULT_RULES = ImageRules()


def _allowed(rules: ImageRules, model: str) -> str:
    if rules == DEFAULT_RULES:
        return _ALLOWED
    low, high = max(MIN_SIDE, rules.min_side), min(MAX_SIDE, rules.max_side)
    aspect = f"{rules.max_aspect:g}"
    return (
        f"{model} takes images {low} to {high} pixels on each side, at most {MAX_PIXELS // 1_000_000} megapixels, "
        f"with an aspect ratio from 1:{aspect} to {aspect}:1"
    )


def _check_shape(key: str, header: ImageHeader, rules: ImageRules, model: str) -> None:
    width, height, kind = header.width, header.height, header.kind.upper()
    allowed = _allowed(rules, model)
    if header.animated:
        raise UnsupportedImage(f"{key} is an animated {kind}; upload a still image (its first frame, exported on its own)")
    if kind.lower() not in rules.formats:
        kinds = ", ".join(kind.upper() for kind in rules.formats)
        raise UnsupportedImage(f"{key} is a {kind} image; {model} takes {kinds} only")
    if header.alpha and rules.no_alpha:
        raise UnsupportedImage(f"{key} is a {kind} with transparency; {model} takes images without it (flatten it, or save it as JPEG)")
    shown = f"{key} is {width}×{height} pixels"
    if min(width, height) < max(MIN_SIDE, rules.min_side):
        raise UnsupportedImage(f"{shown}, smaller than {max(MIN_SIDE, rules.min_side)} pixels on a side; {allowed}")
    if max(width, height) > min(MAX_SIDE, rules.max_side) or width * height > MAX_PIXELS:
        raise UnsupportedImage(f"{shown} ({width * height / 1e6:.1f} megapixels); {allowed}")
    if max(width, height) > rules.max_aspect * min(width, height):
        ratio = math.ceil(100 * max(width, height) / min(width, height)) / 100  # rounded up: never shown as "4:1"
        shape = f"{ratio:g}:1" if width > height else f"1:{ratio:g}"
        raise UnsupportedImage(f"{shown}, an aspect ratio of {shape}; {allowed}")


def check_image(key: str, size: int, read: Reader, rules: ImageRules = DEFAULT_RULES, model: str = "") -> ImageHeader:
    """Refuse empty, oversized, non-image, truncated, animated and badly shaped files, naming what is wrong.

    `rules` are the model's (registry.py); `read(offset, length)` returns those bytes of the object: at most three
    calls, however large the file.
    """
    if size == 0:
        raise UnsupportedImage(f"{key} is empty (0 bytes); upload a JPEG, PNG or WebP image")
    limit = min(MAX_IMAGE_BYTES, rules.max_bytes)
    if size > limit:
        whose = model or "the provider"
        raise ImageTooLarge(f"{key} is {size} bytes; {whose} accepts images up to {limit} bytes ({_megabytes(limit)})")
    try:
        window = _Window(read, size)
    except _HeaderNotFound as exc:
        raise UnsupportedImage(f"{key}: {exc}") from None
    header = _read_header(key, window)
    _check_shape(key, header, rules, model)
    _check_complete(key, size, header.kind, window, read)
    return header


def _megabytes(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size % (1024 * 1024) == 0 else f"{size / 1e6:g} MB"


def end_frame_problem(first: ImageHeader, end: ImageHeader, tolerance: float, end_key: str) -> str | None:
    """An end frame whose aspect ratio is too far from the first frame's for a model that needs them close."""
    if not tolerance:
        return None
    ratio = (first.width / first.height) / (end.width / end.height)
    if 1 / tolerance <= ratio <= tolerance:
        return None
    return (
        f'"end_image" {end_key} is {end.width}×{end.height} and the image {first.width}×{first.height}: their aspect ratios differ '
        f"by {max(ratio, 1 / ratio):.2f}×; the model takes at most {tolerance:g}× (crop one to match the other)"
    )


# Phones append a video (Google and Samsung motion photos) or a trailer (Samsung's SEFH...SEFT) after a JPEG's end.
_MOTION_PHOTO_XMP = (b"MotionPhoto", b"MicroVideo")


def _check_complete(key: str, size: int, kind: ImageType, window: _Window, read: Reader) -> None:
    """Whether the file holds its image's end: an upload cut short is refused; data after the end is fine."""
    if kind == "webp":
        complete = int.from_bytes(window.first[4:8], "little") + 8 <= size  # the RIFF size
    else:
        try:
            tail = _read_exactly(read, max(0, size - TAIL_BYTES), min(size, TAIL_BYTES))
        except _HeaderNotFound as exc:
            raise UnsupportedImage(f"{key}: {exc}") from None
        if kind == "png":
            complete = b"IEND\xaeB`\x82" in tail
        else:  # in entropy-coded data 0xFF is always followed by 0x00 or a restart marker: FF D9 is the end marker
            complete = b"\xff\xd9" in tail or tail.endswith(b"SEFT") or any(mark in window.first for mark in _MOTION_PHOTO_XMP)
    if not complete:
        raise UnsupportedImage(f"{key} looks truncated: the {kind.upper()} data ends before the image does; upload it again")
