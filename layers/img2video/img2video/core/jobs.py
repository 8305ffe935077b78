"""Job identity and the job record that travels through the state machine."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from img2video.core.keys import readable_slug
from img2video.core.notices import BatchRef
from img2video.core.sidecar import VideoRequest
from img2video.core.wait_policy import Plan


def job_id(bucket: str, image_key: str, image_etag: str, sidecar_key: str, sidecar_etag: str, stem: str, upload_marker: str = "") -> str:
    """Same uploads → same id, so re-delivered events and the image/sidecar pair converge; any new upload → a new job.

    `upload_marker` is what changes on every PUT even with identical bytes (the objects' LastModified): a user
    who uploads the same files again after a failure starts a new attempt, with a new execution name (Step
    Functions refuses a closed execution's name for 90 days). The result is a valid execution name
    (≤ 80 chars of [A-Za-z0-9-_]).
    """
    material = "\n".join((bucket, image_key, image_etag.strip('"'), sidecar_key, sidecar_etag.strip('"'), upload_marker))
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()[:10]
    return f"{readable_slug(stem).replace('.', '-')}-{digest}"


HISTORY_PREFIX = "#history#"


def history_key(model: str, resolution: str, duration: int, off_peak: bool) -> str:
    """The kind of job whose earlier generation times tell when one of its kind can be expected: the key of the jobs
    table's item that keeps them."""
    return f"{HISTORY_PREFIX}{model}#{resolution}#{duration}#{'off-peak' if off_peak else 'normal'}"


class SourceObject(BaseModel):
    bucket: str
    key: str
    etag: str = ""


class Job(BaseModel):
    """Everything later steps need, fixed at submit time."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    attempt: int = 1  # 1 for an image's first job, then one more for each new upload of it or its sidecar
    source: SourceObject
    sidecar: SourceObject | None = None
    request: VideoRequest
    extra_image_keys: tuple[str, ...] = ()
    end_image_key: str | None = None  # the video's last frame, for a model that takes one
    video_key: str
    manifest_key: str
    uploaded_at: str = ""
    batch: BatchRef | None = None  # a line of a batch manifest (None: a dropped pair)

    @property
    def history_key(self) -> str:
        """The kind of this job (`history_key`)."""
        request = self.request
        return history_key(request.model, request.resolution, request.duration, request.off_peak)


class PollRecord(BaseModel):
    """What the last poll saw; the state machine waits `wait_seconds` before the next."""

    status: Literal["submitted", "running", "succeeded"] = "submitted"
    polls: int = 0
    progress_percent: float = 0
    eta: float | None = None
    wait_seconds: int | None = None
    finished_at: str | None = None
    last_error: str | None = None  # a passing provider fault seen by the last poll, kept for the timeout message
    plan: Plan | None = None  # when to poll a job without hints, from earlier jobs of its kind; None: no history
    detected_by: Literal["poll", "webhook"] | None = None  # what saw the task finish


class Submitted(BaseModel):
    """What the Submit function hands back through SendTaskSuccess: the paid task and the first wait."""

    task_id: str
    submitted_at: str
    deadline: float  # epoch seconds after which the job fails with PROVIDER_TIMEOUT
    first_poll: PollRecord
    # Novita was asked for a webhook: the execution waits in a callback task (its token stored by task id until this
    # epoch second) that the Webhook function can end early. None: it waits in a plain Wait state.
    webhook_expires_at: int | None = None
    # The kind of job (Job.history_key), left on the task's item while it waits: its webhook's arrival is counted
    # for the kind whenever it comes. Set with webhook_expires_at.
    history_key: str | None = None


class Held(BaseModel):
    """Submit's other answer: the daily limit is reached; the execution waits (for free) until `until`, then asks again."""

    until: str  # RFC 3339 in whole seconds, as a Wait state's TimestampPath wants it
    limit: int


class Stored(BaseModel):
    """Where StoreVideo put the video and its manifest."""

    video_key: str
    manifest_key: str
    size_bytes: int
    sha256: str
    stored_at: str
    manifest: dict[str, Any] = Field(default_factory=dict)


class StepError(BaseModel):
    """A Catch's error output, as Step Functions writes it."""

    error: str = Field(default="States.TaskFailed", alias="Error")
    cause: str | None = Field(default="", alias="Cause")


Stage = Literal["submit", "poll", "store", "notify"]


class ExecutionState(BaseModel):
    """The state machine's data: the job, its task, and what the steps added along the way."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    job: Job
    accepted_at: str = ""
    submitted: Submitted | None = None
    poll: PollRecord = Field(default_factory=PollRecord)
    stored: Stored | None = None
    stage: Stage = "poll"
    error: StepError | None = None

    @field_validator("submitted", mode="before")
    @classmethod
    def _held_is_not_submitted(cls, value: Any) -> Any:
        """A job that failed while held by the daily limit carries Submit's "held" answer: nothing was submitted."""
        return None if isinstance(value, dict) and "held" in value else value

    @property
    def task_id(self) -> str | None:
        return self.submitted.task_id if self.submitted else None
