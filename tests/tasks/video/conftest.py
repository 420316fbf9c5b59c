"""Tiny real media written with PyAV's encoders, shared by the video-data tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path, frames: int = 6, h: int = 16, w: int = 24, codec: str = "mpeg4", seed: int = 0
) -> Path:
    """Encode ``frames`` frames of random RGB noise (noise does not compress: a truncated copy loses frames)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if frames == 0:
            container.start_encoding()
        for _ in range(frames):
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write one gray ``[H, W]`` or RGB ``[H, W, 3]`` uint8 image as png / jpg / tif."""
    codec = {".png": "png", ".jpg": "mjpeg", ".tif": "tiff"}[path.suffix]
    gray = image.ndim == 2
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream(codec, rate=1)
        stream.height, stream.width = image.shape[:2]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else ("gray" if gray else "rgb24")
        frame = av.VideoFrame.from_ndarray(image, format="gray" if gray else "rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, count: int = 3, ext: str = ".png", h: int = 12, w: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_image(folder / f"{i:03d}{ext}", np.full((h, w), 10 * i, dtype=np.uint8))
    return folder


def truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst
