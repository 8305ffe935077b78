"""Stack settings read once from the function environment, so a misconfigured stack fails at cold start."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from img2video.core.registry import DEFAULT_MODEL, MODELS

# Every model's resolutions, in the sidecar's spelling: DefaultResolution fills a model's field where it is one of its own.
Resolution = Literal["480p", "540p", "720p", "768p", "1080p"]
MovementAmplitude = Literal["auto", "small", "medium", "high", "large"]
# The stack's MaxVideoBytes default: a 1080p 10 s video is tens of MB; 1 GiB leaves room for any encoding.
DEFAULT_MAX_VIDEO_BYTES = 1024 * 1024 * 1024


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    input_bucket: Annotated[str, Field(min_length=1)]
    input_prefix: str = "incoming/"
    output_bucket: Annotated[str, Field(min_length=1)]
    output_prefix: str = "videos/"
    topic_arn: Annotated[str, Field(min_length=1)]
    state_machine_arn: str = ""
    upload_queue_url: str = ""
    submit_queue_url: str = ""
    slot_line_queue_url: str = ""  # jobs Novita turned away for want of a task slot (slot_line.py); empty: no line
    idempotency_table: Annotated[str, Field(min_length=1)]
    jobs_table: Annotated[str, Field(min_length=1)]
    novita_secret_id: Annotated[str, Field(min_length=1)]
    novita_base_url: str = "https://api.novita.ai"

    # DefaultModel: the model of a sidecar without "model"; AllowedModels: the ones a sidecar may name (empty: all)
    default_model: str = DEFAULT_MODEL
    allowed_models: str = ""
    default_resolution: Resolution = "720p"
    default_duration: Annotated[int, Field(ge=1, le=15)] = 5
    default_movement_amplitude: MovementAmplitude = "auto"
    default_watermark: bool = False
    default_prompt: str = ""

    poll_min_seconds: Annotated[int, Field(ge=1)] = 5
    poll_max_seconds: Annotated[int, Field(ge=1)] = 60
    poll_max_seconds_off_peak: Annotated[int, Field(ge=1)] = 900
    max_wait_minutes: Annotated[float, Field(gt=0)] = 30
    max_wait_minutes_off_peak: Annotated[float, Field(gt=0)] = 2880
    presign_expiry_seconds: Annotated[int, Field(ge=60, le=604800)] = 3600
    sidecar_grace_seconds: Annotated[int, Field(ge=0, le=86400)] = 60
    max_receive_count: Annotated[int, Field(ge=1)] = 5
    # How the image reaches Novita: a presigned URL, an inline data: URI, or `auto`
    # (data for off_peak jobs, whose start may come after a presigned URL has expired).
    image_transport: Literal["url", "data", "auto"] = "auto"
    # Local mode only: the emulator serves videos over loopback http.
    allow_loopback_http: bool = False
    submit_retry_max_seconds: Annotated[int, Field(ge=1, le=900)] = 900
    # How long a job may wait for Novita to accept it (throttling, outages) before it fails with PROVIDER_FAILED.
    submit_window_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 86400
    # MaxSubmissionsPerDay: paid submits per window (0 = no limit); jobs beyond it are held until a window has room.
    max_submissions_per_day: Annotated[int, Field(ge=0)] = 0
    # The limit's window: a UTC day. Only local tests shorten it, to see a window open within seconds.
    quota_window_seconds: Annotated[int, Field(ge=1)] = 86400
    # The Webhook function's URL (its path secret not included) and the secret holding that path: both empty when the
    # stack's Webhook parameter is off, and then Submit asks Novita for no webhook.
    webhook_url: str = ""
    webhook_secret_id: str = ""
    # EventBusName: the bus job events go to (aws/job_events.py); empty: none are put
    event_bus_name: str = ""
    # The largest video Store copies (counted while streaming, whatever Content-Length says).
    max_video_bytes: Annotated[int, Field(ge=1024 * 1024)] = DEFAULT_MAX_VIDEO_BYTES

    @field_validator("default_model")
    @classmethod
    def _a_model(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"DefaultModel {name!r} is not a model img2video knows: {', '.join(MODELS)}")
        return name

    @field_validator("allowed_models")
    @classmethod
    def _models(cls, names: str) -> str:
        unknown = [name for name in _listed(names) if name not in MODELS]
        if unknown:
            raise ValueError(f"AllowedModels names {', '.join(unknown)}, not models img2video knows: {', '.join(MODELS)}")
        return names

    @model_validator(mode="after")
    def _default_allowed(self) -> Settings:
        if self.default_model not in self.allowed_model_names:
            raise ValueError(f"DefaultModel {self.default_model} is not among AllowedModels ({self.allowed_models})")
        return self

    @property
    def batch_state_machine_arn(self) -> str:
        """The batches' state machine: named from the stack id as the jobs' one is (template.yaml), so its ARN is the
        jobs' with the other name, and no function's environment (4 KB in all) carries one more ARN."""
        return self.state_machine_arn.replace(":stateMachine:img2video-jobs-", ":stateMachine:img2video-batches-", 1)

    @property
    def allowed_model_names(self) -> tuple[str, ...]:
        """The models a sidecar may name, in the registry's order."""
        chosen = set(_listed(self.allowed_models))
        return tuple(name for name in MODELS if not chosen or name in chosen)

    @field_validator("input_prefix", "output_prefix")
    @classmethod
    def _a_folder(cls, prefix: str) -> str:
        """A prefix is a folder: "incoming" means "incoming/", so "incoming2/x.jpg" is never inside it."""
        return prefix if not prefix or prefix.endswith("/") else f"{prefix}/"


def _listed(names: str) -> list[str]:
    return [name.strip() for name in names.split(",") if name.strip()]


def _from_env() -> dict[str, str]:
    # An empty variable means "not set" (CloudFormation parameters cannot be null).
    return {name: value for name in Settings.model_fields if (value := os.environ.get(name.upper(), ""))}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings.model_validate(_from_env())
    except ValidationError as exc:  # a broken stack should say exactly which variable is wrong
        raise RuntimeError(f"img2video is misconfigured: {exc}") from exc
