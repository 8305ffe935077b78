"""Accept Lambda: S3 events (through the UploadQueue) in, one validated job and its execution out; nothing is paid here."""

from typing import Any

from img2video.steps.accept import accept_uploads
from img2video.steps.handler import entry_point


@entry_point()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return accept_uploads(event)
