"""What Novita's Task Result API answers: a task's status, progress and videos, parsed leniently."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TaskStatus(StrEnum):
    QUEUED = "TASK_STATUS_QUEUED"
    PROCESSING = "TASK_STATUS_PROCESSING"
    SUCCEED = "TASK_STATUS_SUCCEED"
    FAILED = "TASK_STATUS_FAILED"
    UNKNOWN = "UNKNOWN"


def _lenient_float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class TaskInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str = ""
    status: str = ""
    reason: str = ""
    eta: float | None = None
    progress_percent: float | None = None

    _lenient = field_validator("eta", "progress_percent", mode="before")(lambda v: _lenient_float(v))

    @property
    def task_status(self) -> TaskStatus:
        try:
            return TaskStatus(self.status)
        except ValueError:
            return TaskStatus.UNKNOWN


class VideoInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    video_url: str
    video_url_ttl: float | None = None
    video_type: str = "mp4"

    _lenient = field_validator("video_url_ttl", mode="before")(lambda v: _lenient_float(v))


class TaskResult(BaseModel):
    """The Task Result answer, parsed leniently: numbers may arrive as strings, unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    task: TaskInfo
    videos: list[VideoInfo] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def generation_seconds(self) -> float | None:
        """How long the task took, submit to completion, by Novita's own clock (`extra.debug_info`); None when it does
        not say. Unlike the moment a poll or a webhook saw it done, this does not depend on when anyone looked."""
        info = self.extra.get("debug_info")
        if not isinstance(info, dict):
            return None
        submitted, completed = _lenient_float(info.get("submit_time_ms")), _lenient_float(info.get("complete_time_ms"))
        if submitted is None or completed is None or not 0 < completed - submitted < 7 * 86400 * 1000:
            return None
        return (completed - submitted) / 1000
