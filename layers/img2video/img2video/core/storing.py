"""Store's decisions, apart from its I/O: whether what S3 already holds is this job's work, and what is left to do.

A retried Store (a timeout, a crash after the upload) must neither fetch a video it already stored nor trust an
older job's files under the same name. steps/store.py reads S3 and acts on what these say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoredVideo:
    size_bytes: int
    sha256: str


def is_this_jobs_video(metadata: dict[str, str], job_id: str, task_id: str) -> bool:
    """A video object carries the job and task that wrote it; another job's video under the same name is replaced."""
    return metadata.get("job-id") == job_id and metadata.get("task-id") == task_id


def vouched_by_manifest(manifest: dict[str, Any], job_id: str, size_bytes: int) -> StoredVideo | None:
    """The stored video as this job's manifest describes it, when the manifest is this job's and matches the object;
    None when it cannot be trusted (then the object is hashed again, never fetched from the provider again)."""
    video = manifest.get("video", {})
    if manifest.get("job_id") == job_id and video.get("size_bytes") == size_bytes and video.get("sha256"):
        return StoredVideo(size_bytes=size_bytes, sha256=str(video["sha256"]))
    return None
