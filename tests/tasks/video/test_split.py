"""The split by source video."""

from __future__ import annotations

import pytest
import torch

from tests.tasks.video.conftest import write_video
from unrolled.tasks.video.config import VideoDataConfig
from unrolled.tasks.video.split import split_by_video


def test_split_by_video_default_sources():
    cfg = VideoDataConfig(
        max_frames=16, moving_mnist_train_videos=8, moving_mnist_test_videos=4, train_clips=64, test_clips=32
    )
    split = split_by_video(cfg, seed=0)
    train_names, test_names = split.train_report.names, split.test_report.names
    assert train_names[:2] == ["bikes", "bigbuckbunny"] and test_names[0] == "carphone"
    assert not set(train_names) & set(test_names)
    shapes = [tuple(v.shape) for v in split.train.videos[:3]]
    assert shapes == [(16, 136, 320), (16, 144, 256), (16, 64, 64)]  # auto downsampling: 2, 5, 1
    assert tuple(split.test.videos[0].shape) == (16, 144, 176)
    assert len(split.train) == 64 and len(split.test) == 32
    assert tuple(split.train[0].shape) == (8, 1, 32, 32)
    # each source gets a third of the train clips: bikes, bigbuckbunny, and the 8 Moving MNIST videos together
    assert split.train.weights[0] == pytest.approx(1 / 3) and sum(split.train.weights[2:]) == pytest.approx(
        1 / 3
    )
    assert not torch.equal(split.train[0], split.test[0])


def test_split_refuses_a_file_on_both_sides(tmp_path):
    write_video(tmp_path / "a.avi", frames=8, h=32, w=32)
    write_video(tmp_path / "b.avi", frames=8, h=32, w=32, seed=1)
    ok = VideoDataConfig(
        train_sources=("a.avi",), test_sources=("b.avi",), root=str(tmp_path), frames=4, crop=16
    )
    split = split_by_video(ok)
    assert len(split.train.videos) == 1 and len(split.test.videos) == 1
    both = VideoDataConfig(
        train_sources=(".",), test_sources=("b.avi",), root=str(tmp_path), frames=4, crop=16
    )
    with pytest.raises(ValueError, match="on both sides"):
        split_by_video(both)
