"""Rendering a real H.264 MP4 from a still image: a slow zoom and pan, as a stand-in for a generated video."""

from __future__ import annotations

import io

import av
from PIL import Image


def output_size(width: int, height: int, resolution: int | str) -> tuple[int, int]:
    """The short side (`720` or "720p"), aspect from the image, both sides even (H.264 with 4:2:0 needs it)."""
    short = resolution if isinstance(resolution, int) else int(resolution.lower().rstrip("p"))
    if width <= height:
        w, h = short, round(height * short / width)
    else:
        w, h = round(width * short / height), short
    return w - w % 2, h - h % 2


def render_video(image_bytes: bytes, resolution: int | str, duration: int, fps: int = 24, end_bytes: bytes | None = None) -> bytes:
    """The zoom and pan over the image; with an end frame, the video dissolves into it and ends on it."""
    opened = Image.open(io.BytesIO(image_bytes))
    opened.load()
    source = opened.convert("RGB")
    width, height = output_size(source.width, source.height, resolution)
    end = Image.open(io.BytesIO(end_bytes)).convert("RGB").resize((width, height), Image.Resampling.BILINEAR) if end_bytes else None
    # Work on a copy a little larger than the output so the zoom never upsamples much.
    base = source.resize((int(width * 1.2), int(height * 1.2)), Image.Resampling.BILINEAR)
    frames = max(1, duration * fps)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "30"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            t = index / max(1, frames - 1)
            zoom = 1.0 + 0.15 * t  # 1.0 → 1.15 over the clip
            crop_w, crop_h = base.width / zoom, base.height / zoom
            left = (base.width - crop_w) * (0.3 + 0.4 * t)  # drift left to right
            top = (base.height - crop_h) / 2
            frame_image = base.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
            if end is not None:
                frame_image = Image.blend(frame_image, end, t)
            frame = av.VideoFrame.from_image(frame_image)  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
