"""VideoDataConfig: loading and validation."""

from __future__ import annotations

import pytest

from unrolled.config import ConfigError, from_dict
from unrolled.tasks.video.config import VideoDataConfig


def test_video_data_config_validates():
    cfg = from_dict(VideoDataConfig, {"frames": 4, "train_sources": ["bikes"]}, "task")
    assert (
        cfg.frames == 4
        and cfg.train_sources == ("bikes",)
        and cfg.test_sources == ("carphone", "moving_mnist:test")
    )
    bad = [
        ({"frames": 0}, "task.frames: must be >= 1"),
        ({"crop": 0}, "task.crop"),
        ({"downsample": 0}, "task.downsample"),
        ({"train_sources": []}, "task.train_sources: must list"),
        ({"test_sources": ["bikes"]}, r"task.test_sources: the split is by source video; \['bikes'\]"),
        ({"train_sources": ["moving_mnist"]}, "task.test_sources: 'moving_mnist' uses every digit"),
        ({"test_sources": ["moving_mnist:tset"]}, r"task.test_sources\[0\]: unknown Moving MNIST source"),
        ({"moving_mnist_frames": 4}, "task.moving_mnist_frames"),
        ({"max_frames": 3}, "task.max_frames"),
        ({"frame": 8}, "did you mean 'frames'"),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_dict(VideoDataConfig, data, "task")
