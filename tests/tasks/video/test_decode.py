"""Decoding: carrier clips, grayscale / RGB, downsampling, errors that name the file, frame folders."""

from __future__ import annotations

import sys

import av
import numpy as np
import pytest
import torch

from tests.tasks.video.conftest import truncate, write_frames, write_image, write_video
from unrolled.tasks import video as V
from unrolled.tasks.video.carriers import carrier_path
from unrolled.tasks.video.decode import VideoDecodeError, read_frame_folder, read_video


@pytest.fixture(scope="module")
def bikes() -> torch.Tensor:
    return read_video(carrier_path("bikes"))


@pytest.fixture(scope="module")
def carphone() -> torch.Tensor:
    return read_video(carrier_path("carphone"))


def test_missing_pyav_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'unrolled\[video\]'"):
        read_video(tmp_path / "x.mp4")


def test_carrier_clip_shapes(bikes, carphone):
    assert bikes.dtype == torch.uint8
    assert tuple(bikes.shape) == (250, 272, 640)
    assert tuple(carphone.shape) == (120, 144, 176)
    assert int(bikes.max()) > 200 and int(bikes.min()) < 50  # full-range luma, real content
    with av.open(str(carrier_path("bigbuckbunny"))) as container:  # header only: 132 frames of 720×1280
        stream = container.streams.video[0]
        assert (stream.frames, stream.height, stream.width) == (132, 720, 1280)
    bunny = read_video(carrier_path("bigbuckbunny"), downsample=5)  # area-downsampled while decoding
    assert tuple(bunny.shape) == (132, 144, 256)


def test_grayscale_and_rgb(carphone):
    rgb = read_video(carrier_path("carphone"), grayscale=False)
    assert rgb.dtype == torch.uint8 and tuple(rgb.shape) == (120, 144, 176, 3)
    luma = (rgb.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)).sum(-1)
    assert (luma - carphone.double()).abs().mean() < 2.0
    first = read_video(carrier_path("carphone"), max_frames=5)
    assert torch.equal(first, carphone[:5])


def test_load_time_downsampling_matches_downsample_video(carphone):
    small = read_video(carrier_path("carphone"), max_frames=4, downsample=2)
    assert torch.equal(small, V.downsample_video(carphone[:4], 2))
    stride = V.downsample_video(carphone[:4], 3, mode="stride")
    assert torch.equal(stride, carphone[:4, ::3, ::3][:, :48, :58])
    x = torch.tensor([[[0, 2, 255], [1, 5, 7]]], dtype=torch.uint8)  # [1, 2, 3]
    assert V.downsample_video(x, 2).tolist() == [[[2]]]  # mean of 0, 2, 1, 5 = 2.0


def test_missing_file(tmp_path):
    path = tmp_path / "nothing_here.mp4"
    with pytest.raises(VideoDecodeError, match="not found") as info:
        read_video(path)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert isinstance(info.value, ValueError)


def test_truncated_files(tmp_path):
    avi = write_video(tmp_path / "clip.avi", frames=40, h=48, w=48)
    assert tuple(read_video(avi).shape) == (40, 48, 48)
    half = truncate(avi, tmp_path / "half.avi")
    with pytest.raises(VideoDecodeError, match="truncated") as info:
        read_video(half)
    assert str(half) in str(info.value)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    mp4 = write_video(tmp_path / "clip.mp4", frames=10, codec=codec)
    half_mp4 = truncate(mp4, tmp_path / "half.mp4")  # moov atom at the end: gone
    with pytest.raises(VideoDecodeError) as info:
        read_video(half_mp4)
    assert str(half_mp4) in str(info.value)


def test_garbage_and_empty_files(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(VideoDecodeError, match="cannot be opened as a video") as info:
        read_video(text)
    assert str(text) in str(info.value)
    empty = write_video(tmp_path / "empty.avi", frames=0)
    with pytest.raises(VideoDecodeError, match="no video frames") as info:
        read_video(empty)
    assert str(empty) in str(info.value)
    with pytest.raises(VideoDecodeError, match="not a file"):
        read_video(tmp_path)


def test_frame_folder_natural_order_and_formats(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in (10, 2, 1, 33):  # written out of order; natural order is 1, 2, 10, 33
        write_image(folder / f"frame{i}.png", np.full((12, 16), i, dtype=np.uint8))
    (folder / "notes.txt").write_text("ignored")
    (folder / ".hidden.png").write_text("ignored")
    frames = read_frame_folder(folder)
    assert tuple(frames.shape) == (4, 12, 16)
    assert frames[:, 0, 0].tolist() == [1, 2, 10, 33]
    assert tuple(read_frame_folder(folder, grayscale=False).shape) == (4, 12, 16, 3)
    for ext in (".jpg", ".tif"):
        other = write_frames(tmp_path / ext[1:], count=2, ext=ext)
        assert tuple(read_frame_folder(other).shape) == (2, 12, 16)


def test_frame_folder_errors_name_the_file(tmp_path):
    folder = write_frames(tmp_path / "clip", count=2)
    bad = folder / "005.png"
    bad.write_text("not an image")
    with pytest.raises(VideoDecodeError) as info:
        read_frame_folder(folder)
    assert str(bad) in str(info.value)
    bad.unlink()
    odd = write_image(folder / "004.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(VideoDecodeError, match="12×16") as info:
        read_frame_folder(folder)
    assert str(odd) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoDecodeError, match="no frame images") as info:
        read_frame_folder(empty)
    assert str(empty) in str(info.value)
