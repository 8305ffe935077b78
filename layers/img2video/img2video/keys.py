"""What an S3 key is to the pipeline: an image, a sidecar, or nothing; and where its outputs go."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SIDECAR_SUFFIXES = (".json", ".txt")  # in order of preference: .json wins

KeyKind = Literal["image", "sidecar", "other"]


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def decode_event_key(raw: str) -> str:
    """S3 event keys are URL-encoded with `+` for space; decode exactly once."""
    return unquote_plus(raw)


@dataclass(frozen=True)
class InputKey:
    key: str
    folder: str  # "incoming/a/" (ends with "/")
    stem: str  # "cat"
    suffix: str  # ".jpg" as written (case kept)

    @property
    def kind(self) -> KeyKind:
        lower = self.suffix.lower()
        if lower in IMAGE_SUFFIXES:
            return "image"
        if lower in SIDECAR_SUFFIXES:
            return "sidecar"
        return "other"

    def same_stem(self, other: InputKey) -> bool:
        """Same folder and name, whatever the Unicode normalization (macOS tools may write NFD, others NFC)."""
        return _nfc(self.folder) == _nfc(other.folder) and _nfc(self.stem) == _nfc(other.stem)

    def sibling_prefixes(self) -> list[str]:
        """The listing prefixes that find this key's siblings, in both Unicode normalizations."""
        base = f"{self.folder}{self.stem}."
        return list(dict.fromkeys(unicodedata.normalize(form, base) for form in ("NFC", "NFD")))

    def relative_folder(self, prefix: str) -> str:
        """The folders between the input prefix and the file: "a/" for incoming/a/cat.jpg."""
        return self.folder[len(prefix) :]


def is_unsafe_image_key(key: str, prefix: str) -> bool:
    """An image upload whose key has `.`, `..` or empty folder names: it cannot be mapped to an output safely."""
    rest = key[len(prefix) :] if key.startswith(prefix) else ""
    return key.lower().endswith(IMAGE_SUFFIXES) and any(part in ("", ".", "..") for part in rest.split("/")[:-1])


def parse_input_key(key: str, prefix: str) -> InputKey | None:
    """Split a decoded key under `prefix`; None for keys the pipeline must ignore."""
    if not key.startswith(prefix) or key.endswith("/"):
        return None
    rest = key[len(prefix) :]
    if any(part in ("", ".", "..") for part in rest.split("/")):
        return None  # `a//b.jpg` or `../x.jpg`: never resolve a path that climbs or hides
    folder, _, name = key.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return None
    return InputKey(key=key, folder=f"{folder}/" if folder else "", stem=stem, suffix=f".{suffix}")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def readable_slug(stem: str, max_len: int = 40) -> str:
    """An ASCII slug of a file stem for job ids and execution names (unicode folded, rest dashed)."""
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE.sub("-", folded).strip("-.")[:max_len].strip("-.")
    return slug or "image"


def resolve_relative(folder: str, relative: str, prefix: str) -> str | None:
    """Resolve a sidecar-relative key; None when it would leave the input prefix."""
    if relative.startswith("/") or "\\" in relative:
        return None
    joined = posixpath.normpath(posixpath.join(folder, relative))
    if not joined.startswith(prefix) or joined == prefix.rstrip("/"):
        return None
    return joined


def output_keys(image: InputKey, input_prefix: str, output_prefix: str, output_name: str) -> tuple[str, str]:
    """The video key and its manifest key: videos/<same folders>/<output_name>.mp4 and .json."""
    base = f"{output_prefix}{image.relative_folder(input_prefix)}{output_name}"
    return f"{base}.mp4", f"{base}.json"


def pick_sidecar(siblings: list[InputKey]) -> InputKey | None:
    """The sidecar among an image's siblings: `.json` before `.txt`, any case; stable if several differ only in case."""
    sidecars = [key for key in siblings if key.kind == "sidecar"]
    return min(sidecars, key=lambda k: (SIDECAR_SUFFIXES.index(k.suffix.lower()), k.key), default=None)
