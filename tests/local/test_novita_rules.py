"""The pipeline's model registry against the emulator's own reading of Novita's reference: written apart, so that a
mistake in either fails here. Whatever a sidecar may ask for, the body built from it is one the endpoint takes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from img2video.core.errors import InvalidSidecar
from img2video.core.registry import MODELS, Field, all_field_names
from img2video.core.sidecar import parse_sidecar
from img2video_local.novita_rules import ENDPOINTS, image_problem, validate_body

from tests.conftest import image_bytes, stack_settings

IMAGE, END = "https://in.example/a.jpg", "https://in.example/b.jpg"
EVERY_FIELD = [name for name in all_field_names() if name not in ("model", "output_name", "tags", "extra_images", "prompt")]


def test_the_emulator_serves_exactly_the_registered_models() -> None:
    assert set(ENDPOINTS) == set(MODELS)
    assert {
        "vidu-q2-turbo-img2video",
        "vidu-q2-pro-img2video",
        "vidu-q2-pro-fast-img2video",
        "vidu-q2-turbo-startend2video",
        "kling-2.5-turbo-i2v",
        "minimax-hailuo-02",
        "minimax-hailuo-2.3-i2v",
        "seedance-v1-pro-i2v",
        "seedance-v1.5-pro-i2v",
        "wan2.6-i2v",
        "wan2.7-i2v",
    } <= set(MODELS)


def _near(field: Field) -> st.SearchStrategy[Any]:
    """Values at and around what the field allows: most are valid, the rest just outside."""
    options: list[Any] = [*field.choices]
    for bound in (field.minimum, field.maximum):
        if bound is not None:
            options += [bound, bound - 1, bound + 1, bound + 0.5]
    if field.kind == "str" and field.max_chars:
        options += ["x" * field.max_chars, "x" * (field.max_chars + 1), " "]
    options += [True, False, "720p", "1080P", 5, "5", None, 0.5, -1]
    return st.sampled_from(options)


def _value_for(name: str) -> st.SearchStrategy[Any]:
    fields = [spec.field(name) for spec in MODELS.values() if spec.field(name) is not None]
    return st.one_of(*[_near(field) for field in fields if field is not None]) if fields else st.just(None)


@st.composite
def sidecars(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(st.sampled_from(list(MODELS)))
    spec = MODELS[model]
    own = [name for name in spec.by_name if name != "prompt"]
    names = draw(st.lists(st.sampled_from(own), unique=True, max_size=len(own)))
    if draw(st.booleans()):  # now and then a field another model takes
        names.append(draw(st.sampled_from(EVERY_FIELD)))
    data: dict[str, Any] = {"model": model, "prompt": draw(st.sampled_from(["a cat", "x" * 2001, "y" * 2500]))}
    data.update({name: draw(_value_for(name)) for name in names if name != "end_image"})
    if spec.end_image_required or (spec.end_image_path and draw(st.booleans())):
        data["end_image"] = "last.jpg"
    return {name: value for name, value in data.items() if value is not None}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sidecars())
def test_every_sidecar_the_pipeline_accepts_builds_a_body_its_endpoint_takes(data: dict[str, Any]) -> None:
    import json

    try:
        request = parse_sidecar(json.dumps(data).encode(), "incoming/a.json", stack_settings())
    except InvalidSidecar as exc:
        assert data["model"] in exc.message or "is not a field" in exc.message or "prompt" in exc.message, exc.message
        return
    body = request.provider_body(IMAGE, END if request.end_image else None)
    assert validate_body(request.model, body) is None, (data, body)


@pytest.mark.parametrize("model", list(MODELS))
def test_a_minimal_sidecar_for_each_model_builds_a_body_its_endpoint_takes(model: str) -> None:
    data = {"model": model, "prompt": "a cat", **({"end_image": "b.jpg"} if MODELS[model].end_image_required else {})}
    import json

    request = parse_sidecar(json.dumps(data).encode(), "incoming/a.json", stack_settings())
    assert validate_body(model, request.provider_body(IMAGE, END if request.end_image else None)) is None


@pytest.mark.parametrize(
    ("model", "body", "problem"),
    [
        ("kling-2.5-turbo-i2v", {"image": IMAGE, "prompt": "p", "duration": 5}, "duration has the wrong type"),
        ("kling-2.5-turbo-i2v", {"image": "data:image/png;base64,AAAA", "prompt": "p"}, "images must be public URLs"),
        ("wan2.6-i2v", {"img_url": IMAGE}, "unknown field(s): img_url"),
        ("wan2.6-i2v", {"input": {"img_url": IMAGE, "seed": 1}}, "unknown field(s): input.seed"),
        ("minimax-hailuo-02", {"prompt": "p", "duration": 10, "resolution": "1080P"}, "10 s videos are 768P only"),
        ("seedance-v1-pro-i2v", {"image": IMAGE}, "resolution is required"),
        ("vidu-q2-turbo-startend2video", {"images": [IMAGE]}, "images must hold 2 images; got 1"),
        ("vidu-q2-turbo-img2video", {"images": [IMAGE], "prompt": "p", "movement_amplitude": "large"}, "movement_amplitude must be one of"),
    ],
)
def test_the_emulator_refuses_what_each_endpoint_refuses(model: str, body: dict[str, Any], problem: str) -> None:
    assert problem in (validate_body(model, body) or "")


@pytest.mark.parametrize(
    ("model", "images", "problem"),
    [
        ("kling-2.5-turbo-i2v", [image_bytes(640, 400, fmt="WEBP")], "INVALID_IMAGE_FORMAT: WEBP"),
        ("wan2.6-i2v", [image_bytes(2400, 1200, fmt="JPEG")], "INVALID_IMAGE_SIZE: 2400x1200"),
        ("seedance-v1-pro-i2v", [image_bytes(900, 300, fmt="JPEG")], "INVALID_IMAGE_SIZE"),
        ("vidu-q2-turbo-startend2video", [image_bytes(800, 400, fmt="JPEG"), image_bytes(400, 400, fmt="JPEG")], "aspect ratios differ"),
    ],
)
def test_the_emulator_fails_a_task_whose_image_the_endpoint_cannot_take(model: str, images: list[bytes], problem: str) -> None:
    assert problem in (image_problem(model, images) or "")
    assert image_problem(model, [image_bytes(640, 400, fmt="JPEG")] * len(images)) is None
