"""The submit request body as a stream: JSON whose inline images are base64-encoded chunk by chunk while it is sent."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

# 768 KiB of image encode to exactly 1 MiB of base64. A multiple of 3 bytes leaves no padding inside the
# data, only (possibly) at its very end, so the encoded chunks concatenate to the one-shot encoding.
RAW_CHUNK_BYTES = 768 * 1024
ENCODED_CHUNK_BYTES = RAW_CHUNK_BYTES // 3 * 4


@dataclass(frozen=True)
class InlineImage:
    """An image sent inline as a data: URI, read in chunks while the request body is written."""

    mime: str  # e.g. "image/jpeg"
    size: int  # bytes of the raw image
    open: Callable[[], BinaryIO]  # returns a fresh readable stream of the raw bytes on each call

    @property
    def encoded_size(self) -> int:
        """Characters of its base64 text (without the `data:...;base64,` prefix)."""
        return (self.size + 2) // 3 * 4


class InlineImageSizeMismatch(ValueError):
    """The image stream gave more or fewer bytes than announced: the object changed or its download broke off."""


class StreamedJsonBody:
    """A JSON request body of known length, produced as it is read.

    It has `__len__` and `tell`, so requests sends a Content-Length rather than chunked encoding, and
    `seek(0)` starts it over (re-opening each image), should the body have to be sent again.
    """

    def __init__(self, parts: list[bytes | InlineImage]) -> None:
        self._parts = parts
        self._length = sum(part.encoded_size if isinstance(part, InlineImage) else len(part) for part in parts)
        self._chunks: Iterator[bytes] = iter(())
        self._closed = False
        self._start()

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(ENCODED_CHUNK_BYTES):
            yield chunk

    def __enter__(self) -> StreamedJsonBody:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self) -> None:
        self._close_chunks()
        self._chunks = self._generate()
        self._buffer = b""
        self._offset = 0
        self._position = 0

    def _close_chunks(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()  # runs the generator's `finally`, closing an image stream left half read

    def _generate(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, InlineImage):
                yield from _encoded(part)
            elif part:
                yield part

    def read(self, size: int | None = -1) -> bytes:
        if self._closed:
            raise ValueError("read from a closed request body")
        wanted = self._length - self._position if size is None or size < 0 else size
        pieces: list[bytes] = []
        while wanted > 0:
            if self._offset >= len(self._buffer):
                self._buffer = b""  # let the spent chunk go before the next one is read and encoded
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer, self._offset = chunk, 0
                continue
            piece = self._buffer[self._offset : self._offset + wanted]
            self._offset += len(piece)
            wanted -= len(piece)
            pieces.append(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._position += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        target = base + offset
        if target == self._position:
            return target
        if target == 0:
            self._start()
            return 0
        # any other position would mean reading (and downloading) the images up to it
        raise io.UnsupportedOperation("a streamed request body can only go back to its start")

    def close(self) -> None:
        self._close_chunks()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


def json_body(body: Mapping[str, Any]) -> StreamedJsonBody:
    """`body` as JSON bytes, exactly `json.dumps(body).encode()` with each InlineImage written as its data: URI."""
    while True:
        # a fresh uuid stands in for each image's base64 text; checking the count makes "it occurs nowhere else" certain
        pieces, images = _split_at_images(body, uuid.uuid4().hex)
        if len(pieces) == len(images) + 1:
            break
    parts: list[bytes | InlineImage] = [pieces[0].encode()]
    for image, piece in zip(images, pieces[1:], strict=True):
        parts += [image, piece.encode()]
    return StreamedJsonBody(parts)


def _split_at_images(body: Mapping[str, Any], marker: str) -> tuple[list[str], list[InlineImage]]:
    """The JSON text around each image's base64 text, and the images in the order they appear."""
    images: list[InlineImage] = []

    def placeholder(value: object) -> str:
        if isinstance(value, InlineImage):
            images.append(value)
            return f"data:{value.mime};base64,{marker}"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    return json.dumps(body, default=placeholder).split(marker), images


def _encoded(image: InlineImage) -> Iterator[bytes]:
    """The image's base64 text, one chunk per RAW_CHUNK_BYTES read, checking it is exactly `size` bytes long."""
    stream = image.open()
    try:
        done = 0
        while done < image.size:
            want = min(RAW_CHUNK_BYTES, image.size - done)
            raw = _read_up_to(stream, want)
            done += len(raw)
            if len(raw) < want:
                raise InlineImageSizeMismatch(
                    f"the {image.mime} image stream ended after {done} bytes, but the image was announced as {image.size} bytes; "
                    "it may have changed or its download broken off"
                )
            yield base64.b64encode(raw)
            del raw  # before the next read: one raw chunk alive at a time
        if stream.read(1):
            raise InlineImageSizeMismatch(
                f"the {image.mime} image stream has more than the {image.size} bytes announced; the image may have changed"
            )
    finally:
        stream.close()


def _read_up_to(stream: BinaryIO, want: int) -> bytes:
    """`want` bytes, or fewer only at the end of the stream: a network stream may answer a read in pieces."""
    first = stream.read(want)
    if not first or len(first) == want:
        return first or b""
    pieces, have = [first], len(first)
    while have < want:
        piece = stream.read(want - have)
        if not piece:
            break
        pieces.append(piece)
        have += len(piece)
    return b"".join(pieces)
