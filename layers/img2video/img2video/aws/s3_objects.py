"""S3 objects: a missing object told apart from a refusal, and the job's state tagged on the user's image."""

from __future__ import annotations

from typing import Literal

from botocore.exceptions import ClientError

from img2video.aws.clients import client
from img2video.observability import logger

# S3 says "missing" with each of these, by operation: HeadObject answers a bare 404 (no body to carry a code).
_MISSING = ("404", "NoSuchKey", "NotFound")


def is_missing(exc: ClientError) -> bool:
    """True when S3 answered that the object does not exist (a 403 is a refusal, never "missing": without
    s3:ListBucket S3 answers a missing key with 403, and that is a fault in the role, not an absent object)."""
    return exc.response.get("Error", {}).get("Code") in _MISSING


SourceState = Literal["queued", "submitted", "succeeded", "failed"]
# A tag never goes back: a late duplicate event cannot turn a finished job's image back to "queued".
_TAG_RANK = {"queued": 0, "submitted": 1, "succeeded": 2, "failed": 2}


def tag_source(bucket: str, key: str, state: SourceState, job_id: str) -> None:
    """Record the job's state on the image, keeping the user's own tags. Best effort: never fails a job."""
    try:
        s3 = client("s3")
        existing = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        current = {tag["Key"]: tag["Value"] for tag in existing}
        if current.get("img2video-job") == job_id and _TAG_RANK.get(current.get("img2video-status", ""), -1) >= _TAG_RANK[state]:
            return  # already there or further along: a late duplicate never takes a job back
        kept = [tag for tag in existing if not tag["Key"].startswith("img2video-")]
        if len(kept) > 8:  # S3 allows 10 tags; the user's own win
            logger.info("Source image has too many tags to add the job state", extra={"key": key})
            return
        tags = [*kept, {"Key": "img2video-status", "Value": state}, {"Key": "img2video-job", "Value": job_id}]
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tags})
    except Exception as exc:  # a tag is a courtesy: no AWS fault here may turn into a second notice
        logger.warning("Could not tag the source image", extra={"key": key, "error": type(exc).__name__})
