"""Poll Lambda: one look at the Novita task; returns its status and the next wait."""

from img2video.steps.handler import state_step
from img2video.steps.poll import poll_task

lambda_handler = state_step(poll_task)
