"""Job identity and the job record that travels through the state machine."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict

from img2video.keys import readable_slug
from img2video.sidecar import VideoRequest


def job_id(bucket: str, image_key: str, image_etag: str, sidecar_key: str, sidecar_etag: str, stem: str) -> str:
    """Same objects → same id, so re-delivered events converge; a changed sidecar → a new job.

    The result is a valid Step Functions execution name (≤ 80 chars of [A-Za-z0-9-_]).
    """
    material = "\n".join((bucket, image_key, image_etag.strip('"'), sidecar_key, sidecar_etag.strip('"')))
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()[:10]
    return f"{readable_slug(stem).replace('.', '-')}-{digest}"


class SourceObject(BaseModel):
    bucket: str
    key: str
    etag: str = ""


class Job(BaseModel):
    """Everything later steps need, fixed at submit time."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    source: SourceObject
    sidecar: SourceObject | None = None
    request: VideoRequest
    extra_image_keys: tuple[str, ...] = ()
    video_key: str
    manifest_key: str
    uploaded_at: str = ""

    def notice_fields(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "source": {"bucket": self.source.bucket, "key": self.source.key}}
