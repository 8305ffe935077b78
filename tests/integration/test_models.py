"""Every registered model through the whole pipeline in local mode: a valid job each, and the refusals its rules imply.

The emulator checks each body against its own reading of Novita's reference (novita_rules.py), not the registry, so a
mistake in either fails here: a body the emulator refuses, an image it would have failed after payment.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from img2video.core.registry import MODELS
from img2video_local.emulator import EmulatorConfig
from img2video_local.emulator_faults import Faults
from img2video_local.runtime import LocalPipeline

from tests.conftest import API_KEY, image_bytes, jpeg_bytes
from tests.integration.test_pipeline import decode

pytestmark = pytest.mark.integration

# The shortest clip and the smallest resolution each model offers: what the video must come out as.
VALID: dict[str, dict[str, Any]] = {
    "vidu-q2-turbo-img2video": {"duration": 1, "resolution": "540p", "movement_amplitude": "small", "bgm": True},
    "vidu-q2-pro-img2video": {"duration": 1, "resolution": "540p", "seed": 7},
    "vidu-q2-pro-fast-img2video": {"duration": 1, "resolution": "720p", "off_peak": True},
    "vidu-q2-turbo-startend2video": {"duration": 1, "resolution": "540p", "movement_amplitude": "large", "end_image": "last.jpg"},
    "kling-2.5-turbo-i2v": {"duration": 5, "cfg_scale": 0.7, "negative_prompt": "blur"},
    "kling-v2.1-i2v": {"duration": 5, "mode": "standard", "cfg_scale": 0.2},
    "wan-2.2-i2v": {"duration": 5, "resolution": "480p", "prompt_extend": False},
    "minimax-hailuo-02": {"duration": 6, "resolution": "768p", "prompt_extend": False, "end_image": "last.jpg"},
    "minimax-hailuo-2.3-i2v": {"duration": 6, "resolution": "768p", "fast_pretreatment": True},
    "seedance-v1-pro-i2v": {"duration": 5, "resolution": "480p", "aspect_ratio": "4:3", "camera_fixed": True},
    "seedance-v1.5-pro-i2v": {"duration": 4, "resolution": "480p", "aspect_ratio": "adaptive", "audio": False},
    "wan2.6-i2v": {"duration": 5, "resolution": "720p", "shot_type": "single", "negative_prompt": "rain"},
    "wan2.7-i2v": {"duration": 2, "resolution": "720p", "end_image": "last.jpg", "seed": 3},
}
SHORT_SIDE = {"540p": 540, "720p": 720, "768p": 768, "480p": 480}

# One refusal per model that its own rules imply, and what the failure notice must say.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "vidu-q2-turbo-img2video": ({"duration": 11}, '"duration" must be an integer number of seconds from 1 to 10'),
    "vidu-q2-pro-img2video": ({"movement_amplitude": "large"}, '"movement_amplitude" must be one of "auto", "small", "medium", "high"'),
    "vidu-q2-pro-fast-img2video": ({"resolution": "540p"}, '"resolution" must be "720p" or "1080p"'),
    "vidu-q2-turbo-startend2video": ({}, '"end_image" is required for vidu-q2-turbo-startend2video'),
    "kling-2.5-turbo-i2v": ({"resolution": "720p"}, '"resolution" is not a field of kling-2.5-turbo-i2v; it is taken by'),
    "kling-v2.1-i2v": ({"mode": "pro"}, '"mode" must be "standard" or "professional"; got "pro" (kling-v2.1-i2v)'),
    "wan-2.2-i2v": ({"duration": 8, "resolution": "1080p"}, '"resolution" must be "480p" or "720p" when "duration" is 8 (wan-2.2-i2v)'),
    "minimax-hailuo-02": ({"duration": 10, "resolution": "1080p"}, '"resolution" must be "768p" when "duration" is 10'),
    "minimax-hailuo-2.3-i2v": ({"end_image": "last.jpg"}, '"end_image" is not a field of minimax-hailuo-2.3-i2v'),
    "seedance-v1-pro-i2v": ({"aspect_ratio": "9:21"}, '"aspect_ratio" must be one of "21:9", "16:9"'),
    "seedance-v1.5-pro-i2v": ({"service_tier": "cheap"}, '"service_tier" must be "default" or "flex"'),
    "wan2.6-i2v": ({"duration": 8}, '"duration" must be one of 5, 10, 15 seconds'),
    "wan2.7-i2v": ({"cfg_scale": 0.5}, '"cfg_scale" is not a field of wan2.7-i2v; it is taken by kling-2.5-turbo-i2v'),
}


def _last_frame_colour(video: bytes) -> tuple[float, float, float]:
    import io

    import av
    from PIL import ImageStat

    with av.open(io.BytesIO(video)) as container:
        *_, last = container.decode(container.streams.video[0])
        red, green, blue = ImageStat.Stat(last.to_image()).mean
    return red, green, blue


def _transparent_png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (255, 0, 0, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _local() -> LocalPipeline:
    config = EmulatorConfig(api_key=API_KEY, generation_seconds=1.0, queue_seconds=0.2, fps=4, faults=Faults())
    return LocalPipeline(emulator_config=config)


def _job(local: LocalPipeline, folder: str, fields: dict[str, Any]) -> str:
    """Upload a pair (and an end frame beside it); the image's key."""
    key = f"incoming/{folder}/still.jpg"
    local.upload(f"incoming/{folder}/last.jpg", jpeg_bytes(640, 400, color=(20, 60, 200)))
    local.upload(key, jpeg_bytes(640, 400))
    local.upload(f"incoming/{folder}/still.json", json.dumps({"prompt": "the tide comes in", **fields}).encode())
    return key


def test_every_model_makes_its_video_at_its_resolution_and_length_each_paid_once() -> None:
    assert set(VALID) == set(MODELS), "every registered model needs a valid job here"
    with _local() as local:
        keys = {model: _job(local, model, {"model": model, **fields}) for model, fields in VALID.items()}
        received = local.wait_for_notices(set(keys.values()), timeout=600)
        by_key = {r.notice["source"]["key"]: r.notice for r in received}
        assert len(received) == len(keys), "one notice per job"
        submitted = [s["model"] for s in local.emulator.submissions]
        assert sorted(submitted) == sorted(MODELS), "each model's endpoint paid exactly once"
        assert local.emulator.requests_seen.get("bad_image", 0) == 0
        for model, key in keys.items():
            notice = by_key[key]
            assert notice["event"] == "video.succeeded", (model, notice.get("error"))
            assert notice["request"]["model"] == model
            data = local.s3.get_object(Bucket=local.output_bucket, Key=notice["video"]["key"])["Body"].read()
            seconds, width, height, codec = decode(data)
            assert codec == "h264"
            assert abs(seconds - VALID[model]["duration"]) < 0.5, (model, seconds)
            if "end_image" in VALID[model]:  # the video ends on the end frame (blue), not the image (orange)
                red, _, blue = _last_frame_colour(data)
                assert blue > 150 and red < 80, (model, red, blue)
            resolution = VALID[model].get("resolution")
            if resolution:  # Kling's output resolution is not documented
                assert min(width, height) == SHORT_SIDE[resolution], (model, width, height)


def test_each_models_own_refusal_ends_in_one_precise_notice_and_nothing_is_paid() -> None:
    assert set(REFUSED) == set(MODELS)
    with _local() as local:
        keys = {model: _job(local, f"bad-{model}", {"model": model, **fields}) for model, (fields, _) in REFUSED.items()}
        received = local.wait_for_notices(set(keys.values()), timeout=300)
        assert len(received) == len(keys)
        by_key = {r.notice["source"]["key"]: r.notice for r in received}
        for model, key in keys.items():
            notice = by_key[key]
            assert notice["event"] == "video.failed" and notice["error"]["code"] == "INVALID_SIDECAR", (model, notice)
            assert REFUSED[model][1] in notice["error"]["message"], (model, notice["error"]["message"])
        assert local.emulator.submissions == []


def test_images_a_model_cannot_take_are_refused_at_acceptance_by_that_models_limits() -> None:
    cases = {
        # Kling takes JPEG and PNG only; Wan takes no transparency; Seedance needs more than 300 pixels a side
        "kling": ("kling-2.5-turbo-i2v", image_bytes(640, 400, fmt="WEBP"), "a WEBP image; kling-2.5-turbo-i2v takes JPEG, PNG only"),
        "wan": ("wan2.6-i2v", _transparent_png(640, 400), "a PNG with transparency"),
        "seedance": ("seedance-v1-pro-i2v", jpeg_bytes(640, 300), "smaller than 301 pixels on a side"),
        "startend": (
            "vidu-q2-turbo-startend2video",
            jpeg_bytes(800, 400),
            "their aspect ratios differ by 2.00×; the model takes at most 1.25×",
        ),
    }
    with _local() as local:
        keys = {}
        for folder, (model, data, _) in cases.items():
            suffix = ".webp" if folder == "kling" else ".png" if folder == "wan" else ".jpg"
            keys[folder] = key = f"incoming/{folder}/still{suffix}"
            local.upload(f"incoming/{folder}/last.jpg", jpeg_bytes(640, 640))
            local.upload(key, data)
            fields = {"prompt": "p", "model": model, **({"end_image": "last.jpg"} if folder == "startend" else {})}
            local.upload(f"incoming/{folder}/still.json", json.dumps(fields).encode())
        received = local.wait_for_notices(set(keys.values()), timeout=300)
        by_key = {r.notice["source"]["key"]: r.notice for r in received}
        for folder, (_, _, expected) in cases.items():
            notice = by_key[keys[folder]]
            assert notice["event"] == "video.failed" and notice["error"]["code"] == "UNSUPPORTED_IMAGE", (folder, notice)
            assert expected in notice["error"]["message"], (folder, notice["error"]["message"])
        assert local.emulator.submissions == []
