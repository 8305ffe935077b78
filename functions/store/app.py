"""Store Lambda: stream the finished video to S3 and write its manifest (resuming whatever an earlier try finished)."""

from img2video.steps.handler import state_step
from img2video.steps.store import store_video

lambda_handler = state_step(store_video)
