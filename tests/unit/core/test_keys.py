"""Which keys are images or sidecars, how event keys are decoded, and where outputs go."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st
from img2video.core.keys import (
    InputKey,
    decode_event_key,
    image_key_problem,
    output_key_problem,
    output_keys,
    parse_input_key,
    pick_sidecar,
    readable_slug,
    resolve_relative,
)

from tests.conftest import stack_settings

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
def test_what_is_outside_the_contract_is_ignored(key: str) -> None:
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
    picked = pick_sidecar(_keys(names[0])[0], _keys(*names))
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


# -- keys a hostile or careless user can upload (issue 8) ---------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("incoming/a/.jpg", "has no name before its suffix (.jpg); name the file, e.g. cat.jpg"),
        ("incoming/.PNG", "has no name before its suffix (.PNG)"),
        ("incoming/a//b.jpg", "has an empty, '.' or '..' folder name"),
        ("incoming/a/../b.jpg", "has an empty, '.' or '..' folder name"),
        ("incoming/a/c\x01t.jpg", "incoming/a/c\\x01t.jpg holds the control character U+0001"),
        ("incoming/caf\u00e9\x7f.webp", "caf\u00e9\\x7f.webp holds the control character U+007F"),
    ],
)
def test_an_image_key_that_cannot_become_a_job_is_named_for_its_notice(key: str, expected: str) -> None:
    problem = image_key_problem(key, PREFIX)
    assert problem is not None and expected in problem


@pytest.mark.parametrize(
    "key", ["incoming/cat.jpg", "incoming/a b/Été + 100% 猫.jpeg", "incoming/.hidden/x.png", "other/.jpg", "incoming/x.txt"]
)
def test_ordinary_keys_and_keys_that_are_not_images_have_no_problem(key: str) -> None:
    assert image_key_problem(key, PREFIX) is None


def test_an_output_key_longer_than_s3_allows_is_refused_before_paying() -> None:
    image = parse_input_key("incoming/" + "d/" * 200 + "x" * 600 + ".jpg", PREFIX)
    assert image is not None and len(image.key.encode()) <= 1024
    video, manifest = output_keys(image, PREFIX, "videos-for-the-team/", image.stem)
    problem = output_key_problem(video, manifest)
    assert problem is not None and "S3 keys are at most 1024" in problem and "bytes of UTF-8" in problem
    assert output_key_problem(*output_keys(image, PREFIX, "videos/", "short")) is None


def test_nfc_and_nfd_spellings_each_pair_with_their_own_sidecar() -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    siblings = _keys(f"{nfc}.jpg", f"{nfd}.jpg", f"{nfc}.txt", f"{nfd}.txt")
    for stem in (nfc, nfd):
        image = _keys(f"{stem}.jpg")[0]
        picked = pick_sidecar(image, siblings)
        assert picked is not None and picked.stem == stem
    # with only one spelling's sidecar, both images pair with it, as before
    only_nfd = _keys(f"{nfc}.jpg", f"{nfd}.jpg", f"{nfd}.txt")
    assert {pick_sidecar(_keys(f"{s}.jpg")[0], only_nfd).stem for s in (nfc, nfd)} == {nfd}  # type: ignore[union-attr]


def test_a_prefix_without_its_slash_is_still_a_folder() -> None:
    """InputPrefix "incoming" must not let `../incoming2/x.jpg` count as inside it."""
    settings = stack_settings(input_prefix="incoming")
    assert settings.input_prefix == "incoming/"
    assert resolve_relative("incoming/a/", "../../incoming2/x.jpg", settings.input_prefix) is None
