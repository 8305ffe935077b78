"""Telling a real, complete image from bytes that only carry an image suffix."""

from __future__ import annotations

from typing import Literal

from img2video.errors import ImageTooLarge, UnsupportedImage

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # the provider's per-image limit
HEAD_BYTES = 16
TAIL_BYTES = 16

ImageType = Literal["jpeg", "png", "webp"]


def sniff_image_type(head: bytes) -> ImageType | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(key: str, size: int, head: bytes, tail: bytes) -> ImageType:
    """Reject empty, oversized, non-image and truncated files, naming what is wrong.

    Only the first and last bytes are read: enough to catch the common failures
    (a text file renamed .jpg, an upload cut short) without loading the image.
    """
    if size == 0:
        raise UnsupportedImage(f"{key} is empty (0 bytes); upload a JPEG, PNG or WebP image")
    if size > MAX_IMAGE_BYTES:
        raise ImageTooLarge(f"{key} is {size} bytes; the provider accepts images up to {MAX_IMAGE_BYTES} bytes (50 MB)")
    kind = sniff_image_type(head)
    if kind is None:
        raise UnsupportedImage(
            f"{key} is not a JPEG, PNG or WebP image (its first bytes are {head[:8].hex()}); only those formats are accepted"
        )
    complete = {
        "jpeg": tail.rstrip(b"\x00").endswith(b"\xff\xd9"),
        "png": tail.endswith(b"IEND\xaeB`\x82"),
        "webp": int.from_bytes(head[4:8], "little") + 8 == size,
    }[kind]
    if not complete:
        raise UnsupportedImage(f"{key} looks truncated: the {kind.upper()} data ends before the image does; upload it again")
    return kind
