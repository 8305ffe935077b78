"""The model a sidecar names, and the request each model receives: built from the registry, checked before paying."""

from __future__ import annotations

import json
from typing import Any

import pytest
from img2video.core.errors import InvalidSidecar
from img2video.core.jobs import Job
from img2video.core.registry import MODELS
from img2video.core.sidecar import VideoRequest, default_request, parse_sidecar
from pydantic import ValidationError

from tests.conftest import stack_settings

IMAGE, END = "https://in/a.jpg", "https://in/b.jpg"


def parse(data: dict[str, Any], **settings: Any) -> VideoRequest:
    return parse_sidecar(json.dumps(data).encode(), "incoming/a.json", stack_settings(**settings))


def refusal(data: dict[str, Any], **settings: Any) -> str:
    with pytest.raises(InvalidSidecar) as caught:
        parse(data, **settings)
    return caught.value.message


def test_without_a_model_the_stacks_default_model_is_used_and_its_body_is_unchanged() -> None:
    request = parse({"prompt": "a cat", "seed": 7})
    assert request.model == "vidu-q2-turbo-img2video"
    assert request.provider_body(IMAGE) == {
        "images": [IMAGE],
        "prompt": "a cat",
        "duration": 5,
        "resolution": "720p",
        "movement_amplitude": "auto",
        "seed": 7,
        "bgm": False,
        "audio": False,
        "watermark": False,
        "off_peak": False,
    }
    assert parse({"prompt": "a cat"}, default_model="wan2.7-i2v").model == "wan2.7-i2v"


def test_each_model_gets_its_fields_where_and_as_it_takes_them() -> None:
    kling = parse({"model": "kling-2.5-turbo-i2v", "prompt": "p", "duration": 10, "cfg_scale": 0.3})
    assert kling.provider_body(IMAGE) == {"image": IMAGE, "prompt": "p", "duration": "10", "cfg_scale": 0.3, "mode": "pro"}
    wan = parse({"model": "wan2.6-i2v", "prompt": "p", "seed": 4, "negative_prompt": "fog", "resolution": "720p"})
    body = wan.provider_body(IMAGE)
    assert body["input"] == {"img_url": IMAGE, "prompt": "p", "negative_prompt": "fog"}
    assert body["parameters"]["seed"] == 4 and body["parameters"]["resolution"] == "720P"
    ends = parse({"model": "vidu-q2-turbo-startend2video", "prompt": "p", "end_image": "b.jpg"})
    assert ends.provider_body(IMAGE, END)["images"] == [IMAGE, END]
    seedance = parse({"model": "seedance-v1.5-pro-i2v", "prompt": "p", "audio": False, "aspect_ratio": "1:1", "end_image": "b.jpg"})
    body = seedance.provider_body(IMAGE, END)
    assert (body["generate_audio"], body["ratio"], body["last_image"]) == (False, "1:1", END)


def test_the_stacks_defaults_fill_a_model_only_with_values_it_offers() -> None:
    hailuo = parse({"model": "minimax-hailuo-02", "prompt": "p"}, default_duration=5, default_resolution="720p")
    assert (hailuo.duration, hailuo.resolution) == (6, "768P")  # its own defaults: it offers neither 5 s nor 720p
    vidu = parse({"prompt": "p"}, default_duration=8, default_resolution="1080p")
    assert (vidu.duration, vidu.resolution) == (8, "1080p")


def test_a_required_field_with_no_default_the_stack_can_fill_is_asked_for() -> None:
    message = refusal({"model": "seedance-v1-pro-i2v", "prompt": "p"}, default_resolution="768p")
    assert '"resolution" is required for seedance-v1-pro-i2v: one of "480p", "720p", "1080p"' in message


def test_an_unknown_model_gets_the_closest_names_and_a_disallowed_one_the_allowed_list() -> None:
    assert 'did you mean "kling-2.5-turbo-i2v" or "kling-v2.1-i2v"?' in refusal({"model": "kling", "prompt": "p"})
    assert 'did you mean "wan2.6-i2v"' in refusal({"model": "wan2.6", "prompt": "p"})
    message = refusal({"model": "wan2.7-i2v", "prompt": "p"}, allowed_models="vidu-q2-turbo-img2video,kling-2.5-turbo-i2v")
    assert "is not allowed on this stack (AllowedModels: vidu-q2-turbo-img2video, kling-2.5-turbo-i2v)" in message


def test_every_problem_is_reported_at_once_naming_the_model() -> None:
    message = refusal({"model": "minimax-hailuo-2.3-i2v", "prompt": "", "duration": 5, "off_peak": True, "end_image": "b.jpg"})
    assert '"prompt" must be a non-empty string of at most 2000 characters; it is empty' in message
    assert '"duration" must be 6 or 10 seconds; got 5 (minimax-hailuo-2.3-i2v)' in message
    assert '"off_peak" is not a field of minimax-hailuo-2.3-i2v; it is taken by vidu-q2-turbo-img2video' in message
    assert '"end_image" is not a field of minimax-hailuo-2.3-i2v; it is taken by vidu-q2-turbo-startend2video' in message


def test_a_model_with_an_optional_prompt_takes_a_sidecar_without_one() -> None:
    request = parse({"model": "wan2.7-i2v"})
    assert "prompt" not in request.provider_body(IMAGE)
    assert '"prompt" is required for kling-2.5-turbo-i2v' in refusal({"model": "kling-2.5-turbo-i2v"})


def test_resolution_has_one_spelling_for_every_model_and_is_sent_as_the_model_spells_it() -> None:
    assert parse({"model": "minimax-hailuo-02", "prompt": "p", "resolution": "1080p"}).provider_body(IMAGE)["resolution"] == "1080P"
    assert parse({"prompt": "p", "resolution": "1080p"}).provider_body(IMAGE)["resolution"] == "1080p"
    message = refusal({"model": "wan2.6-i2v", "prompt": "p", "resolution": "1080P"})
    assert '"resolution" must be "720p" or "1080p"; got "1080P" (wan2.6-i2v)' in message


def test_the_slow_tier_of_either_kind_is_off_peak_for_the_wait_and_its_history() -> None:
    flex = parse({"model": "seedance-v1.5-pro-i2v", "prompt": "p", "service_tier": "flex"})
    assert flex.off_peak and not parse({"model": "seedance-v1.5-pro-i2v", "prompt": "p"}).off_peak
    assert parse({"prompt": "p", "off_peak": True}).off_peak


def test_a_job_started_by_the_code_before_models_keeps_every_field_it_asked_for() -> None:
    old = {
        "model": "vidu-q2-turbo-img2video",
        "prompt": "p",
        "duration": 4,
        "resolution": "540p",
        "movement_amplitude": "small",
        "seed": None,
        "bgm": True,
        "audio": False,
        "voice_id": None,
        "watermark": False,
        "off_peak": True,
        "extra_images": [],
        "output_name": None,
        "tags": {},
    }
    request = VideoRequest.model_validate(old)
    assert request.off_peak and request.provider_body(IMAGE)["bgm"] is True and request.options["movement_amplitude"] == "small"
    job = Job.model_validate(
        {
            "job_id": "j",
            "attempt": 1,
            "source": {"bucket": "b", "key": "incoming/a.jpg"},
            "request": old,
            "video_key": "v",
            "manifest_key": "m",
        }
    )
    assert job.history_key.endswith("#540p#4#off-peak")


def test_the_stacks_model_settings_are_checked_at_cold_start() -> None:
    with pytest.raises(ValidationError, match="DefaultModel 'vidu-q3' is not a model"):
        stack_settings(default_model="vidu-q3")
    with pytest.raises(ValidationError, match="AllowedModels names kling, not models"):
        stack_settings(allowed_models="kling")
    with pytest.raises(ValidationError, match="DefaultModel vidu-q2-turbo-img2video is not among AllowedModels"):
        stack_settings(allowed_models="wan2.6-i2v")


def test_the_default_prompt_uses_the_default_model() -> None:
    request = default_request(stack_settings(default_prompt="slow zoom", default_model="kling-2.5-turbo-i2v"))
    assert request.model == "kling-2.5-turbo-i2v" and request.provider_body(IMAGE)["duration"] == "5"


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_states_its_source_and_its_image_rules(model: str) -> None:
    spec = MODELS[model]
    assert spec.source.startswith("§") and spec.image.formats and spec.field("duration") is not None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_numbers_a_model_is_sent(constant: str) -> None:
    raw = f'{{"model": "kling-2.5-turbo-i2v", "prompt": "p", "cfg_scale": {constant}}}'.encode()
    with pytest.raises(InvalidSidecar, match=f"is not valid JSON for a sidecar: {constant} is not a JSON number"):
        parse_sidecar(raw, "incoming/a.json", stack_settings())


def test_an_end_image_of_null_is_no_end_image_and_a_model_that_needs_one_says_so() -> None:
    message = refusal({"model": "vidu-q2-turbo-startend2video", "prompt": "p", "end_image": None})
    assert '"end_image" is required for vidu-q2-turbo-startend2video' in message
    assert parse({"model": "minimax-hailuo-02", "prompt": "p", "end_image": None}).end_image is None


def test_a_stack_default_that_breaks_a_models_rule_gives_way_to_the_models_own_default() -> None:
    # Hailuo's 10 s clips are 768P only: DefaultResolution=1080p must not refuse a sidecar that never named one
    ten = parse({"model": "minimax-hailuo-02", "prompt": "p", "duration": 10}, default_resolution="1080p")
    assert (ten.duration, ten.resolution) == (10, "768P")
    both = parse({"model": "minimax-hailuo-02", "prompt": "p"}, default_resolution="1080p", default_duration=10)
    assert (both.duration, both.resolution) in ((10, "768P"), (6, "1080P"))
    asked = refusal({"model": "minimax-hailuo-02", "prompt": "p", "duration": 10, "resolution": "1080p"})
    assert '"resolution" must be "768p" when "duration" is 10' in asked  # what the user wrote is still refused


@pytest.mark.parametrize("lossless", [False, True])  # VP8X's alpha flag, VP8L's alpha_is_used bit
def test_a_webp_with_transparency_is_refused_for_a_model_that_takes_none(lossless: bool) -> None:
    import io

    from img2video.core.errors import UnsupportedImage
    from img2video.core.images import check_image
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (640, 400), (255, 0, 0, 128)).save(buffer, format="WEBP", lossless=lossless)
    data = buffer.getvalue()
    spec = MODELS["wan2.6-i2v"]
    with pytest.raises(UnsupportedImage, match=r"is a WEBP with transparency; wan2\.6-i2v takes images without it"):
        check_image("incoming/a.webp", len(data), lambda offset, length: data[offset : offset + length], spec.image, spec.name)
    vidu = MODELS["vidu-q2-turbo-img2video"]  # a model that does not mind
    assert check_image("incoming/a.webp", len(data), lambda o, n: data[o : o + n], vidu.image, vidu.name).alpha
