"""Reading a manifest: every line numbered as an editor shows it, every bad line its own precise problem."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from img2video.core.batch import CHUNK_BYTES, LINES_PER_CHUNK, chunks, in_batch_folder, line_fields, read_manifest
from img2video.core.errors import InvalidManifest, InvalidSidecar


def test_a_json_line_ends_only_at_a_newline_not_at_the_breaks_json_allows_inside_strings() -> None:
    first = json.dumps({"image": "cat.jpg", "prompt": "a\u2028b\u2029c\x85d"}, ensure_ascii=False)
    lines = read_manifest(f"{first}\r\n\r\n{json.dumps({'image': 'dog.jpg'})}\n".encode(), "in/x.batch.jsonl")
    assert [line.number for line in lines] == [1, 3]
    assert line_fields(lines[0].text, 1)[1]["prompt"] == "a\u2028b\u2029c\x85d"


def test_a_csv_record_is_numbered_by_the_file_line_it_starts_on() -> None:
    text = 'image,prompt\ncat.jpg,"two\nlines"\ndog.jpg\n'
    lines = read_manifest(text.encode(), "in/x.batch.csv")
    assert [line.number for line in lines] == [2, 4] and lines[1].problem == "line 4 has 1 cells; the header names 2 columns"


def test_a_csv_cell_that_is_not_a_finite_number_stays_text_for_its_field_to_name() -> None:
    [line] = read_manifest(b"image,duration,seed\ncat.jpg,NaN,7\n", "in/x.batch.csv")
    assert line_fields(line.text, 2)[1] == {"duration": "NaN", "seed": 7}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"image": "cat.jpg", "duration": 1e999}', 'line 5: "duration" must be a finite number; got Infinity'),
        ('{"image": "cat.jpg", "x": ' + "[" * 20000 + "]" * 20000 + "}", "line 5 has JSON nested too deeply"),
        ('{"image": "\\ud800.jpg"}', 'line 5: "image" must name an image file'),
        ("[1, 2]", "line 5 must be a JSON object"),
        ("{nope", "line 5 is not a JSON object"),
    ],
)
def test_a_bad_line_is_one_precise_problem(text: str, expected: str) -> None:
    with pytest.raises(InvalidSidecar) as refused:
        line_fields(text, 5)
    assert refused.value.message.startswith(expected)


def test_a_line_of_control_characters_is_refused_before_it_could_overflow_a_map_item() -> None:
    raw = '{"image": "cat.jpg", "prompt": "' + "\x01" * 60000 + '"}'  # raw control characters: 60 KB, 360 KB escaped
    [line] = read_manifest(raw.encode(), "in/x.batch.jsonl")
    assert "once its control characters are escaped" in line.problem


@given(st.lists(st.text(max_size=3000), min_size=1, max_size=80))
def test_every_chunk_fits_one_map_item(texts: list[str]) -> None:
    manifest = "\n".join(json.dumps({"image": "a.jpg", "prompt": t}, ensure_ascii=False) for t in texts).encode("utf-8", "surrogatepass")
    try:
        lines = read_manifest(manifest, "in/x.batch.jsonl")
    except InvalidManifest:
        return
    parts = chunks(lines)
    assert [item["line"] for part in parts for item in part] == [line.number for line in lines]
    assert all(len(part) <= LINES_PER_CHUNK and len(json.dumps({"lines": part}).encode()) <= CHUNK_BYTES + 64 for part in parts)


def test_a_batch_folder_is_any_folder_ending_in_dot_batch() -> None:
    assert in_batch_folder("shoot.batch/") and in_batch_folder("a/Shoot.BATCH/b/") and not in_batch_folder("batch/")
