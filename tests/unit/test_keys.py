"""Which keys are images or sidecars, how event keys are decoded, and where outputs go."""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st
from img2video.keys import InputKey, decode_event_key, output_keys, parse_input_key, pick_sidecar, readable_slug, resolve_relative

PREFIX = "incoming/"


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("incoming/cat.jpg", "image"),
        ("incoming/a/b/CAT.JPEG", "image"),
        ("incoming/x.Png", "image"),
        ("incoming/x.webp", "image"),
        ("incoming/x.json", "sidecar"),
        ("incoming/x.TXT", "sidecar"),
        ("incoming/x.gif", "other"),
    ],
)
def test_kind_is_decided_case_insensitively(key: str, kind: str) -> None:
    parsed = parse_input_key(key, PREFIX)
    assert parsed is not None and parsed.kind == kind


@pytest.mark.parametrize(
    "key", ["other/cat.jpg", "incoming/", "incoming/folder/", "incoming/noext", "incoming/../x.jpg", "incoming/a//b.jpg"]
)
def test_keys_outside_the_contract_are_ignored(key: str) -> None:
    assert parse_input_key(key, PREFIX) is None


def _keys(*names: str) -> list[InputKey]:
    return [k for k in (parse_input_key(f"incoming/a/{name}", PREFIX) for name in names) if k is not None]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["cat.jpg", "cat.txt", "cat.json"], "cat.json"),
        (["cat.jpg", "cat.TXT"], "cat.TXT"),
        (["cat.JPG", "cat.JSON", "cat.txt"], "cat.JSON"),
        (["cat.jpg"], None),
    ],
)
def test_sidecar_is_picked_json_first_in_any_case(names: list[str], expected: str | None) -> None:
    picked = pick_sidecar(_keys(*names))
    assert (picked.key if picked else None) == (f"incoming/a/{expected}" if expected else None)


def test_event_keys_are_decoded_once() -> None:
    assert decode_event_key("incoming/my+cat%2B1+%25done.jpg") == "incoming/my cat+1 %done.jpg"
    assert decode_event_key("incoming/%C3%A9t%C3%A9.jpg") == "incoming/été.jpg"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), min_size=1, max_size=30))
def test_any_name_round_trips_through_s3_encoding(name: str) -> None:
    key = f"incoming/deep/{name}.jpg"
    assert decode_event_key(quote_plus(key, safe="/")) == key


@given(st.text(max_size=60))
def test_slug_is_always_a_valid_execution_name_part(stem: str) -> None:
    slug = readable_slug(stem)
    assert 1 <= len(slug) <= 40
    assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in slug)


def test_outputs_keep_folders_under_videos() -> None:
    parsed = parse_input_key("incoming/a/b/cat.jpg", PREFIX)
    assert parsed is not None
    assert output_keys(parsed, PREFIX, "videos/", "cat") == ("videos/a/b/cat.mp4", "videos/a/b/cat.json")


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("b.jpg", "incoming/a/b.jpg"),
        ("../c.png", "incoming/c.png"),
        ("sub/d.jpg", "incoming/a/sub/d.jpg"),
        ("../../etc/passwd.jpg", None),
        ("/abs.jpg", None),
        ("..\\x.jpg", None),
    ],
)
def test_extra_images_stay_inside_the_prefix(relative: str, expected: str | None) -> None:
    assert resolve_relative("incoming/a/", relative, PREFIX) == expected
