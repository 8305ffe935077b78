"""Batch manifests: a `.batch.jsonl` or `.batch.csv` file whose every line is one job, as a dropped pair would be.

Reading a manifest is pure: its bytes become numbered lines, and the lines chunks small enough for one Step Functions
item each (docs/reference/batches.md). What a line asks for is then read exactly as a sidecar is (`core/sidecar.py`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from img2video.core.errors import InvalidManifest, InvalidSidecar
from img2video.core.keys import InputKey, readable_slug
from img2video.core.notices import NoticeError
from img2video.core.sidecar import MAX_SIDECAR_BYTES
from img2video.core.text import map_text, sendable

MANIFEST_SUFFIXES = (".batch.jsonl", ".batch.csv")
# Every line's end is counted on the batch's item in the jobs table (a set of line numbers, far below DynamoDB's
# 400 KB per item), and the completion notice lists the failed lines (far below SNS's 256 KiB).
MAX_MANIFEST_LINES = 10_000
MAX_MANIFEST_BYTES = 32 * 1024 * 1024  # read whole by one function: far below its memory
MAX_LINE_BYTES = MAX_SIDECAR_BYTES  # a line is a sidecar with an "image" field
# One Map item (one child execution's input) holds at most this many lines and bytes: Step Functions passes at most
# 256 KiB between states, and one function invocation takes a chunk.
LINES_PER_CHUNK = 25
CHUNK_BYTES = 160 * 1024
IMAGE_FIELD = "image"
# CSV cells are text: these columns stay text; another column's cell that reads as a JSON number, true, false or an
# array (extra_images) is that value, and an empty cell is no value at all.
_TEXT_COLUMNS = frozenset({"image", "prompt", "negative_prompt", "model", "resolution", "aspect_ratio", "output_name", "end_image"})
_TAG_COLUMN = re.compile(r"^tags\.(.+)$")


def is_manifest(key: str) -> bool:
    return key.lower().endswith(MANIFEST_SUFFIXES)


BATCH_FOLDER_SUFFIX = ".batch"


def in_batch_folder(relative_folder: str) -> bool:
    """Images (and sidecars) in a folder whose name ends in `.batch` belong to batches: only a manifest's line makes
    them a job, however long their upload takes and in whatever order (no MISSING_SIDECAR for a batch's images)."""
    return any(part.lower().endswith(BATCH_FOLDER_SUFFIX) for part in relative_folder.split("/") if part)


def manifest_format(key: str) -> Literal["jsonl", "csv"]:
    return "csv" if key.lower().endswith(".batch.csv") else "jsonl"


def manifest_name(key: str) -> str:
    """shoot for incoming/jan/shoot.batch.jsonl."""
    name = key.rsplit("/", 1)[-1]
    return name[: -len(next(s for s in MANIFEST_SUFFIXES if name.lower().endswith(s)))] if is_manifest(key) else name


def manifest_folder(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


@dataclass(frozen=True)
class Line:
    """One line of a manifest: its number as an editor shows it, and its fields as JSON text, or what was wrong."""

    number: int
    text: str = ""
    problem: str = ""

    def item(self) -> dict[str, Any]:
        return {"line": self.number, "problem": self.problem} if self.problem else {"line": self.number, "text": self.text}


def read_manifest(raw: bytes, key: str) -> list[Line]:
    """Every non-blank line of the manifest, numbered as an editor numbers them (the CSV header is line 1)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InvalidManifest(f"{key} is {len(raw):,} bytes; a manifest may be at most {MAX_MANIFEST_BYTES:,} bytes (32 MiB): split it")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidManifest(f"{key} is not UTF-8 text (byte {exc.start} cannot be read): save it as UTF-8") from None
    lines = _csv_lines(text, key) if manifest_format(key) == "csv" else _jsonl_lines(text)
    if len(lines) > MAX_MANIFEST_LINES:
        raise InvalidManifest(f"{key} has {len(lines):,} lines; a manifest may list at most {MAX_MANIFEST_LINES:,} images: split it")
    return lines


def _too_long(number: int, text: str) -> Line | None:
    """A line over 64 KiB, or one whose JSON-escaped text (control characters take six bytes each) would not fit one
    Map item within Step Functions' 256 KiB."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_LINE_BYTES:
        return Line(number, problem=f"line {number} is {size:,} bytes; a line may be at most {MAX_LINE_BYTES:,} bytes (64 KiB)")
    escaped = len(json.dumps(text).encode())
    if escaped > CHUNK_BYTES:
        return Line(number, problem=f"line {number} is {escaped:,} bytes once its control characters are escaped; at most {CHUNK_BYTES:,}")
    return None


def _jsonl_lines(text: str) -> list[Line]:
    lines = []
    # JSON Lines ends a line at "\n" (a "\r" before it is dropped), never at U+2028 and the other breaks splitlines()
    # knows: they may stand unescaped inside a JSON string
    for number, raw_line in enumerate(text.split("\n"), start=1):
        raw_line = raw_line.removesuffix("\r")
        if not raw_line.strip():
            continue
        lines.append(_too_long(number, raw_line) or Line(number, text=raw_line))
    return lines


def _csv_lines(text: str, key: str) -> list[Line]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    first = 1
    for row in reader:  # a record's number is the file line it starts on (a quoted cell may hold line breaks)
        rows.append((first, row))
        first = reader.line_num + 1
    header = [cell.strip() for cell in rows[0][1]] if rows else []
    if IMAGE_FIELD not in header:
        raise InvalidManifest(f'{key}: its first line must name the columns, one of them "image"; got {header[:10]}')
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise InvalidManifest(f"{key}: the column {duplicated[0]!r} is named twice in the header")
    lines = []
    for number, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            lines.append(Line(number, problem=f"line {number} has {len(row)} cells; the header names {len(header)} columns"))
            continue
        fields = json.dumps(_csv_fields(header, row), ensure_ascii=False)
        lines.append(_too_long(number, fields) or Line(number, text=fields))
    return lines


def _csv_fields(header: list[str], row: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, cell in zip(header, row, strict=True):
        if cell == "":
            continue
        tag = _TAG_COLUMN.match(name)
        if tag:
            fields.setdefault("tags", {})[tag.group(1)] = cell
        elif name in _TEXT_COLUMNS:
            fields[name] = cell
        else:
            fields[name] = _typed(cell)
    return fields


def _typed(cell: str) -> Any:
    try:
        value = json.loads(cell)
    except ValueError:
        return cell
    if isinstance(value, float) and not math.isfinite(value):
        return cell  # NaN, Infinity: text, which the field's own check then names
    return value if isinstance(value, int | float | bool | list) else cell


def chunks(lines: list[Line]) -> list[list[dict[str, Any]]]:
    """The lines in order, in chunks of at most LINES_PER_CHUNK lines and CHUNK_BYTES of JSON each."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for line in lines:
        item = line.item()
        item_size = len(json.dumps(item).encode())
        if not out or len(out[-1]) >= LINES_PER_CHUNK or size + item_size > CHUNK_BYTES:
            out.append([])
            size = 0
        out[-1].append(item)
        size += item_size
    return out


def line_fields(text: str, number: int) -> tuple[str, dict[str, Any]]:
    """The image a line names, and the rest of its fields as a sidecar would hold them."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise InvalidSidecar(f"line {number} is not a JSON object: {exc}") from None
    except RecursionError:
        raise InvalidSidecar(f"line {number} has JSON nested too deeply; a line is one object of sidecar fields") from None
    if not isinstance(data, dict):
        raise InvalidSidecar(f'line {number} must be a JSON object like {{"image": "cat.jpg", "prompt": "..."}}; got {type(data).__name__}')
    for name, value in data.items():  # 1e999 reads as an infinity: no field takes one
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidSidecar(f'line {number}: "{name}" must be a finite number; got {text_of(value)}')
    image = data.pop(IMAGE_FIELD, None)
    if not isinstance(image, str) or not image.strip() or _SURROGATE.search(image):
        shown = json.dumps(image) if not isinstance(image, str) else repr(image)
        raise InvalidSidecar(f'line {number}: "image" must name an image file, relative to the manifest\'s folder; got {shown}')
    return image, data


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_of(value: float) -> str:
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def line_output_name(number: int, image: InputKey, requested: str | None) -> str:
    """A line's video is named by the line, so two lines of one image never overwrite each other: 0007-cat."""
    return requested or f"{number:05d}-{readable_slug(image.stem)}"


def batch_output_folder(manifest_key: str, input_prefix: str) -> str:
    """The folder of a batch's videos, under the output prefix: jan/shoot/ for incoming/jan/shoot.batch.jsonl."""
    folder = manifest_folder(manifest_key)
    relative = folder[len(input_prefix) :] if folder.startswith(input_prefix) else folder
    return f"{relative}{manifest_name(manifest_key)}/"


# --- the batch's one completion notice -------------------------------------------------------------

Outcome = Literal["succeeded", "failed", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("succeeded", "failed", "cancelled")


class BatchNotice(BaseModel):
    """Published once per batch, when every line has its own notice (or the manifest could not be read)."""

    model_config = ConfigDict(frozen=True)

    version: str = "1"
    event: Literal["batch.completed"] = "batch.completed"
    notice_id: str
    batch_id: str
    attempt: int
    manifest: dict[str, str]
    lines: int
    counts: dict[str, int]
    failed_lines: list[int] = []
    error: NoticeError | None = None
    timings: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _always_sendable(cls, data: Any) -> Any:
        return map_text(data, sendable)


def batch_notice(
    *,
    batch_id: str,
    attempt: int,
    manifest: dict[str, str],
    lines: int,
    counts: dict[str, int],
    failed_lines: list[int],
    error: NoticeError | None = None,
    timings: dict[str, Any] | None = None,
) -> BatchNotice:
    return BatchNotice(
        notice_id=f"{batch_id}:completed",
        batch_id=batch_id,
        attempt=attempt,
        manifest=manifest,
        lines=lines,
        counts={outcome: int(counts.get(outcome, 0)) for outcome in OUTCOMES},
        failed_lines=sorted(failed_lines),
        error=error,
        timings=timings or {},
    )


def batch_subject(notice: BatchNotice) -> str:
    name = notice.manifest.get("key", "").rsplit("/", 1)[-1]
    if notice.error is not None:
        text = f"Batch failed ({notice.error.code}): {name}"
    else:
        text = f"Batch done: {notice.counts['succeeded']} of {notice.lines} videos ready ({name})"
    return text.encode("ascii", "ignore").decode("ascii")[:99]


def batch_email_text(notice: BatchNotice) -> str:
    lines = [f"Manifest: s3://{notice.manifest['bucket']}/{notice.manifest['key']} (attempt {notice.attempt})", ""]
    if notice.error is not None:
        lines += ["The manifest could not be read; no line became a job."]
        lines += [f"Error:  {notice.error.code}", f"Reason: {notice.error.message}"]
    else:
        lines += [f"Lines: {notice.lines}", *(f"  {outcome}: {notice.counts[outcome]}" for outcome in OUTCOMES)]
        if notice.failed_lines:
            shown = ", ".join(str(n) for n in notice.failed_lines[:50])
            more = f" and {len(notice.failed_lines) - 50} more" if len(notice.failed_lines) > 50 else ""
            lines += ["", f"Failed lines: {shown}{more} (each line's own notice says why)"]
    return "\n".join([*lines, "", f"Batch: {notice.batch_id}"])


def batch_publish_arguments(notice: BatchNotice, topic_arn: str) -> dict[str, Any]:
    return {
        "TopicArn": topic_arn,
        "Subject": batch_subject(notice),
        "MessageStructure": "json",
        "Message": json.dumps({"default": notice.model_dump_json(), "email": batch_email_text(notice)}, ensure_ascii=False),
        "MessageAttributes": {"event": {"DataType": "String", "StringValue": notice.event}},
    }
