"""Sidecar parsing: what users write, what they get, and the messages when it is wrong."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from img2video.errors import InvalidSidecar
from img2video.settings import Settings
from img2video.sidecar import MAX_SIDECAR_BYTES, default_request, parse_sidecar

SETTINGS = Settings(
    input_bucket="in",
    output_bucket="out",
    topic_arn="arn:t",
    idempotency_table="t",
    novita_secret_id="s",
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
    assert (request.duration, request.resolution, request.movement_amplitude, request.watermark) == (4, "540p", "small", True)


def test_sidecar_fields_override_stack_defaults() -> None:
    request = parse({"prompt": "p", "duration": 10, "resolution": "1080p", "watermark": False, "seed": 7, "off_peak": True})
    assert (request.duration, request.resolution, request.watermark, request.seed, request.off_peak) == (10, "1080p", False, 7, True)


def test_provider_body_holds_only_provider_fields() -> None:
    request = parse({"prompt": "p", "tags": {"a": "b"}, "output_name": "x", "voice_id": "v1"})
    body = request.provider_body(["https://img"])
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
        (b"\xff\xfe\x00", "is not valid UTF-8 text: byte 0xff at position 0"),
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
