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


# S3 keys are at most 1024 bytes of UTF-8; the video's and the manifest's keys must fit too.
MAX_KEY_BYTES = 1024
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def image_key_problem(key: str, prefix: str) -> str | None:
    """Why an image upload under `prefix` cannot become a job, in words for its failure notice; None if it can.

    Every such key gets a notice rather than being ignored: the user uploaded an image and waits for an answer.
    """
    if not key.startswith(prefix) or not key.lower().endswith(IMAGE_SUFFIXES):
        return None
    rest = key[len(prefix) :]
    if any(part in ("", ".", "..") for part in rest.split("/")[:-1]):
        return f"{key} has an empty, '.' or '..' folder name; upload it under a plain folder path"
    name = rest.rsplit("/", 1)[-1]
    if not name.rpartition(".")[0]:
        return f"{key} has no name before its suffix ({name}); name the file, e.g. cat{name}"
    control = _CONTROL.search(key)
    if control:
        shown = _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", key)
        return (
            f"{shown} holds the control character U+{ord(control.group()):04X}, "
            "which S3 listings and HTTP headers cannot carry; rename the file without it"
        )
    return None


def output_key_problem(video_key: str, manifest_key: str) -> str | None:
    """Why the job's outputs could not be written (checked before anything is paid); None if they can."""
    size, longest = max((len(key.encode()), key) for key in (video_key, manifest_key))
    if size > MAX_KEY_BYTES:
        return (
            f"the output key {longest[:60]}... would be {size} bytes of UTF-8; S3 keys are at most "
            f"{MAX_KEY_BYTES}: use a shorter file name or output_name, or fewer folders"
        )
    return None


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


def pick_sidecar(image: InputKey, siblings: list[InputKey]) -> InputKey | None:
    """The image's sidecar among its siblings: `.json` before `.txt`, any case; stable if several differ only in case.

    A sidecar spelled exactly as the image (same Unicode normalization) wins: `café.jpg` in NFC and in NFD,
    each with its own sidecar, each get their own. Only when there is none does the other spelling pair.
    """
    sidecars = [key for key in siblings if key.kind == "sidecar"]
    exact = [key for key in sidecars if key.folder == image.folder and key.stem == image.stem]
    return min(exact or sidecars, key=lambda k: (SIDECAR_SUFFIXES.index(k.suffix.lower()), k.key), default=None)
