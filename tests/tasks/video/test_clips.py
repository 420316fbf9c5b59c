"""ClipDataset: shapes, content, determinism, flips, downsampling, errors that name the video."""

from __future__ import annotations

import pytest
import torch

from unrolled.tasks.video.clips import ClipDataset


def _videos() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("a", torch.randint(0, 256, (12, 40, 50), dtype=torch.uint8, generator=g)),
        ("b", torch.randint(0, 256, (9, 36, 36), dtype=torch.uint8, generator=g)),
    ]


def test_clip_dataset_shapes_range_and_content():
    videos = _videos()
    ds = ClipDataset(videos, frames=8, crop=32, clips=50, seed=0)
    assert len(ds) == 50 and ds.channels == 1
    for i in range(50):
        clip = ds[i]
        assert clip.dtype == torch.float32 and tuple(clip.shape) == (8, 1, 32, 32)
        assert float(clip.min()) >= 0.0 and float(clip.max()) <= 1.0
        info = ds.clip_info(i)
        src = videos[info.video][1][
            info.start : info.start + 8, info.top : info.top + 32, info.left : info.left + 32
        ]
        assert torch.equal((clip[:, 0] * 255).round().to(torch.uint8), src)
    assert {ds.clip_info(i).video for i in range(50)} == {0, 1}
    with pytest.raises(IndexError):
        ds[50]
    rgb = ClipDataset([torch.zeros(8, 32, 32, 3, dtype=torch.uint8)], frames=8, crop=32, clips=2)
    assert tuple(rgb[0].shape) == (8, 3, 32, 32)


def test_clip_dataset_determinism():
    ds = ClipDataset(_videos(), frames=4, crop=16, clips=64, seed=7)
    again = ClipDataset(_videos(), frames=4, crop=16, clips=64, seed=7)
    other = ClipDataset(_videos(), frames=4, crop=16, clips=64, seed=8)
    assert torch.equal(ds[5], ds[5])
    assert torch.equal(ds[torch.tensor(5)], ds[5])
    assert all(torch.equal(ds[i], again[i]) for i in reversed(range(64)))  # order does not matter
    assert not all(torch.equal(ds[i], other[i]) for i in range(64))
    first = torch.stack([ds[i] for i in range(64)])
    ds.set_epoch(1)
    assert not torch.equal(first, torch.stack([ds[i] for i in range(64)]))
    ds.set_epoch(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), first)  # any worker count gives the same data


def test_clip_dataset_flip_and_downsample():
    video = torch.arange(10 * 64 * 64).remainder(251).to(torch.uint8).view(10, 64, 64)
    ds = ClipDataset([video], frames=2, crop=16, clips=40, seed=0, flip=True, downsample=2)
    assert tuple(ds.videos[0].shape) == (10, 32, 32)  # downsampled once, at construction
    flips = [ds.clip_info(i).flipped for i in range(40)]
    assert any(flips) and not all(flips)
    i = flips.index(True)
    info = ds.clip_info(i)
    src = ds.videos[0][info.start : info.start + 2, info.top : info.top + 16, info.left : info.left + 16]
    assert torch.equal((ds[i][:, 0] * 255).round().to(torch.uint8), src.flip(-1))
    assert not any(ClipDataset([video], frames=2, crop=16, clips=40).clip_info(i).flipped for i in range(40))


def test_clip_dataset_errors_name_the_video():
    short = [
        ("long", torch.zeros(10, 40, 40, dtype=torch.uint8)),
        ("short", torch.zeros(5, 40, 40, dtype=torch.uint8)),
    ]
    with pytest.raises(ValueError, match="'short' has 5 frames"):
        ClipDataset(short, frames=8, crop=32)
    with pytest.raises(ValueError, match="'long' is 20×20 after downsampling by 2"):
        ClipDataset(short[:1], frames=8, crop=32, downsample=2)
    with pytest.raises(ValueError, match="'video 1' has 3 channel\\(s\\) but 'video 0' has 1"):
        ClipDataset(
            [torch.zeros(8, 32, 32, dtype=torch.uint8), torch.zeros(8, 32, 32, 3, dtype=torch.uint8)], 8, 32
        )
    with pytest.raises(ValueError, match="uint8"):
        ClipDataset([torch.zeros(8, 32, 32)], 8, 32)
    with pytest.raises(ValueError, match="frames must be"):
        ClipDataset(short, frames=0)
