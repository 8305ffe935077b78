"""Sidecar parsing: what users write, what they get, and the messages when it is wrong."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from img2video.core.errors import InvalidSidecar
from img2video.core.sidecar import MAX_SIDECAR_BYTES, default_request, parse_sidecar

from tests.conftest import any_text, stack_settings

SETTINGS = stack_settings(
    default_resolution="540p",
    default_duration=4,
    default_movement_amplitude="small",
    default_watermark=True,
    default_prompt="",
)


def parse(data: object, key: str = "incoming/cat.json") -> object:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_sidecar(raw, key, SETTINGS)


def error_of(data: object, key: str = "incoming/cat.json") -> str:
    with pytest.raises(InvalidSidecar) as caught:
        parse(data, key)
    return caught.value.message


def test_minimal_json_gets_stack_defaults() -> None:
    request = parse({"prompt": "  a cat  "})
    assert request.prompt == "a cat"
    assert (request.duration, request.resolution, request.options["movement_amplitude"], request.options["watermark"]) == (
        4,
        "540p",
        "small",
        True,
    )


def test_fields_given_override_the_stacks_defaults() -> None:
    request = parse({"prompt": "p", "duration": 10, "resolution": "1080p", "watermark": False, "seed": 7, "off_peak": True})
    options = request.options
    assert (request.duration, request.resolution, options["watermark"], options["seed"], request.off_peak) == (10, "1080p", False, 7, True)


def test_provider_body_holds_only_provider_fields() -> None:
    request = parse({"prompt": "p", "tags": {"a": "b"}, "output_name": "x", "voice_id": "v1"})
    body = request.provider_body("https://img")
    assert body["images"] == ["https://img"] and body["voice_id"] == "v1"
    assert not {"tags", "output_name", "extra_images", "model", "seed"} & set(body)


def test_txt_sidecar_is_the_prompt_and_a_bom_is_dropped() -> None:
    request = parse_sidecar("\ufeffA dog runs on the beach\n".encode(), "incoming/dog.txt", SETTINGS)
    assert request.prompt == "A dog runs on the beach"


def test_json_with_bom_is_accepted() -> None:
    assert parse(b'\xef\xbb\xbf{"prompt": "x"}').prompt == "x"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"prompt": "p", "durration": 5}, 'unknown field "durration"; did you mean "duration"?'),
        ({"prompt": "p", "resolutoin": "720p"}, 'did you mean "resolution"?'),
        ({"prompt": "p", "duration": 12}, '"duration" must be an integer number of seconds from 1 to 10; got 12'),
        ({"prompt": "p", "duration": "5"}, '"duration" must be an integer number of seconds from 1 to 10; got "5"'),
        ({"prompt": "p", "duration": 5.5}, "got 5.5"),
        ({"prompt": "p", "resolution": "4k"}, '"resolution" must be one of "540p", "720p", "1080p"; got "4k"'),
        ({"prompt": "p", "movement_amplitude": "huge"}, '"movement_amplitude" must be one of "auto", "small", "medium", "high"'),
        ({"prompt": "p", "watermark": "yes"}, '"watermark" must be a JSON boolean, true or false; got "yes"'),
        ({"prompt": "p", "bgm": 1}, '"bgm" must be a JSON boolean'),
        ({"prompt": "p", "seed": -1}, '"seed" must be an integer from 0 to 2147483647; got -1'),
        ({"prompt": "p", "tags": {"a": 1}}, '"tags.a" must be an object of at most 20 string values'),
        ({"prompt": "p", "extra_images": "b.jpg"}, '"extra_images" must be a list'),
        ({"prompt": "p", "output_name": "a/b"}, '"output_name" must be a file name without "/"'),
        ({"prompt": "p", "output_name": "../up"}, '"output_name" must be a file name'),
        ({"prompt": "p", "output_name": ".."}, '"output_name" must be a file name'),
        ({}, '"prompt" is required'),
        ({"prompt": ""}, '"prompt" must be a non-empty string'),
        ({"prompt": "   \n\t"}, "it is empty"),
        ({"prompt": 42}, '"prompt" must be a non-empty string of at most 2000 characters; got 42'),
        ({"prompt": "x" * 2001}, "it has 2001 characters"),
        (["prompt"], "must hold a JSON object"),
        (b'{"prompt": "x",}', "is not valid JSON: "),
        (b'{"prompt": "x",}', "at line 1 column 16"),
        (b"\xff\xfe\x00", "is not valid UTF-16 text"),
        (b"caf\xe9", "is not valid UTF-8 text: byte 0xe9 at position 3"),
        (b"x" * (MAX_SIDECAR_BYTES + 1), "a sidecar may be at most 65536 bytes"),
    ],
)
def test_bad_sidecars_name_the_field_the_value_and_what_is_allowed(data: object, expected: str) -> None:
    message = error_of(data)
    assert expected in message
    assert "incoming/cat.json" in message


def test_every_problem_is_reported_at_once() -> None:
    message = error_of({"prompt": "p", "duration": 0, "resolution": "8k"})
    assert '"duration"' in message and '"resolution"' in message


def test_output_name_drops_an_mp4_suffix() -> None:
    assert parse({"prompt": "p", "output_name": "holiday clip.mp4"}).output_name == "holiday clip"


def test_default_prompt_request() -> None:
    settings = SETTINGS.model_copy(update={"default_prompt": "Animate gently"})
    assert default_request(settings).prompt == "Animate gently"


@given(st.dictionaries(st.text(min_size=1, max_size=12), st.none() | st.booleans() | st.integers() | st.text(max_size=20), max_size=6))
def test_any_json_object_either_parses_or_fails_with_invalid_sidecar(data: dict[str, object]) -> None:
    try:
        request = parse(data)
    except InvalidSidecar as exc:
        assert exc.message and exc.code == "INVALID_SIDECAR"
    else:
        assert request.prompt.strip() and 1 <= request.duration <= 10


@given(st.binary(max_size=300))
def test_any_bytes_never_crash_the_parser(raw: bytes) -> None:
    for key in ("incoming/x.json", "incoming/x.txt"):
        with contextlib.suppress(InvalidSidecar):
            parse_sidecar(raw, key, SETTINGS)


# -- hostile and careless sidecars (issue 8): each was paid for, lost its notice, or hid a problem -----------------


def test_a_duplicate_field_is_refused_naming_it() -> None:
    message = error_of(b'{"prompt": "p", "duration": 5, "duration": 10}')
    assert '"duration" is given 2 times' in message


def test_a_duplicate_tag_is_refused_too() -> None:
    assert '"a" is given 2 times' in error_of(b'{"prompt": "p", "tags": {"a": "1", "a": "2"}}')


@pytest.mark.parametrize("depth", [3, 50, 10_000, 100_000])
def test_deep_nesting_is_refused_without_a_recursion_error(depth: int) -> None:
    raw = b'{"prompt": "p", "tags": ' + b"[" * depth + b"]" * depth + b"}"
    message = error_of(raw[:MAX_SIDECAR_BYTES] if len(raw) > MAX_SIDECAR_BYTES else raw)
    assert "nested" in message or "at most 65536 bytes" in message


def test_nesting_inside_strings_does_not_count() -> None:
    assert parse({"prompt": "[[[[{{{{ brackets ]]]] in a prompt are fine"}).prompt.startswith("[[[[")


@pytest.mark.parametrize(
    "prompt",
    ["\u200b\u200c\u200d\ufeff", "\u2060\u00ad", " \u200b \n\u200e\u200f ", "\u202e\u2066"],
)
def test_a_prompt_of_only_invisible_characters_is_refused(prompt: str) -> None:
    message = error_of({"prompt": prompt})
    assert '"prompt" has no visible text' in message


@pytest.mark.parametrize(("prompt", "where"), [("a cat\x00", "U+0000 at position 5"), ("a \x1b[31mred", "U+001B at position 2")])
def test_control_characters_in_a_prompt_are_refused_with_their_position(prompt: str, where: str) -> None:
    message = error_of({"prompt": prompt})
    assert '"prompt" holds the control character' in message and where in message


def test_line_breaks_and_tabs_in_a_prompt_are_fine() -> None:
    assert parse({"prompt": "a cat\n\tyawns\r\n"}).prompt == "a cat\n\tyawns"


def test_a_utf16_txt_without_bom_is_refused_as_utf16() -> None:
    message = error_of("a cat yawns".encode("utf-16-le"), "incoming/cat.txt")
    assert "UTF-16" in message and "save it as UTF-8" in message


def test_a_utf16_txt_with_bom_is_read() -> None:
    assert parse_sidecar("a cat yawns".encode("utf-16"), "incoming/cat.txt", SETTINGS).prompt == "a cat yawns"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"prompt": "a cat \\ud83d"}', '"prompt" holds invalid Unicode: a lone surrogate \\ud83d at position 6'),
        (b'{"prompt": "p", "\\ud800": 1}', "a field name holds invalid Unicode: a lone surrogate \\ud800"),
        (b'{"prompt": "p", "tags": {"k": "\\udfff"}}', '"tags.k" holds invalid Unicode: a lone surrogate \\udfff'),
    ],
)
def test_lone_surrogates_are_refused_with_a_message_that_can_be_sent(raw: bytes, expected: str) -> None:
    message = error_of(raw)
    assert expected in message
    message.encode("utf-8")  # the message itself must be sendable: no surrogate of its own


def test_every_problem_is_reported_at_once_the_empty_prompt_included() -> None:
    message = error_of({"prompt": "", "durration": 12, "resolution": "8k"})
    assert '"prompt"' in message and '"durration"' in message and '"resolution"' in message


def test_long_values_are_shortened_in_the_message() -> None:
    message = error_of({"prompt": "p", "voice_id": 7, "resolution": "x" * 5000})
    assert len(message) < 1000 and "..." in message


ANY_TEXT = any_text(max_size=12)
FIELD = st.sampled_from(["prompt", "duration", "tags", "extra_images", "output_name", "voice_id"]) | ANY_TEXT


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELD, inner, max_size=4),
    max_leaves=12,
)


@given(
    JSON_VALUE
    | st.builds(lambda prompt, rest: {**rest, "prompt": prompt}, ANY_TEXT, st.just({}) | st.dictionaries(FIELD, JSON_VALUE, max_size=3))
)
def test_any_json_with_any_unicode_parses_or_fails_with_a_sendable_message(data: object) -> None:
    raw = json.dumps(data, ensure_ascii=True).encode()  # surrogates travel as \\uXXXX escapes, as in a hostile file
    try:
        request = parse(raw)
    except InvalidSidecar as exc:
        exc.message.encode("utf-8")
        assert exc.code == "INVALID_SIDECAR"
    else:
        request.model_dump_json()  # what reaches the notice serialises
        assert any(not ch.isspace() for ch in request.prompt)


def test_thousands_of_problems_are_summed_up_so_the_notice_stays_small() -> None:
    message = error_of({"prompt": "p", **{f"f{i}": 1 for i in range(5000)}})
    assert len(message) < 2000
    assert 'unknown field "f0"' in message and "and 4990 more problems" in message
    assert "known fields for vidu-q2-turbo-img2video: prompt" in message


def test_a_hostile_string_of_escaped_quotes_is_judged_as_one_string() -> None:
    message = error_of(b'{"prompt": "p", "tags": "' + b'\\"' * 30000 + b'"}')
    assert '"tags" must be an object' in message


# -- found by attacking the change: each a test first -----------------------------------------------------------
def test_an_integer_too_long_for_python_is_invalid_json_not_a_crash() -> None:
    assert "is not valid JSON" in error_of(b'{"prompt": "a cat", "seed": ' + b"9" * 5000 + b"}")


@pytest.mark.parametrize(
    "prompt",
    ["\u0301\u0301", "\u0300" * 10, "\u034f", "\ufe0f\ufe0e", "\u180b", "\u3164", "\uffa0", "\u115f\u1160", "\u2800", "\u17b4\u17b5"],
)
def test_marks_fillers_and_blank_symbols_alone_are_not_visible_text(prompt: str) -> None:
    assert '"prompt" has no visible text' in error_of({"prompt": prompt})


@pytest.mark.parametrize("prompt", ["é", "e\u0301", "猫", "🐈", "42", "!?", "a\u2800b"])
def test_any_letter_digit_punctuation_or_symbol_is_visible(prompt: str) -> None:
    assert parse({"prompt": prompt}).prompt == prompt


def test_an_extra_image_entry_longer_than_an_s3_key_is_refused_briefly() -> None:
    message = error_of(json.dumps({"prompt": "p", "extra_images": ["\U0001f600" * 16000]}, ensure_ascii=False).encode())
    assert '"extra_images.0" must be' in message and "at most 1024 bytes" in message and len(message) < 1000


def test_a_long_tag_name_is_refused_and_the_message_stays_short() -> None:
    message = error_of({"prompt": "x", "tags": {"k" * 60000: "v"}})
    assert "tag names of at most 128 characters" in message and len(message) < 1000
    assert len(error_of({"prompt": "x", "tags": {"k" * 60000: 5}})) < 1000


@pytest.mark.parametrize("name", ["a\x85b", "a\u2028b", "a\u202egpj.exe", "\u200b", "\u3164", ".mp4", " .mp4"])
def test_output_names_with_invisible_or_control_characters_or_nothing_before_mp4_are_refused(name: str) -> None:
    assert '"output_name" must be' in error_of({"prompt": "p", "output_name": name})


def test_a_blank_voice_id_is_refused() -> None:
    assert '"voice_id" must be' in error_of({"prompt": "p", "voice_id": " "})


def test_a_utf32_sidecar_is_named_as_such() -> None:
    assert "UTF-32" in error_of("a cat".encode("utf-32"), "incoming/cat.txt")
