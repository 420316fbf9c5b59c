"""The video-denoising experiment end to end on real clips, kept tiny: runs, sweeps, resume, bad files."""

import json

import pytest
import torch

from unrolled.config import from_dict
from unrolled.experiments import ExperimentConfig, run_experiment
from unrolled.experiments.denoising import ClipStream, evaluate_denoiser, rmse_255
from unrolled.models.denoisers import VideoDenoiser
from unrolled.perturb import Perturbation
from unrolled.tasks.video import ClipDataset, VideoDecodeError

TINY = {
    "name": "tiny_denoise",
    "seeds": [0],
    "task": {
        "kind": "video",
        "frames": 4,
        "crop": 16,
        "train_clips": 64,
        "test_clips": 16,
        "moving_mnist_train_videos": 8,
        "moving_mnist_test_videos": 4,
    },
    "train": {"steps": 16, "batch_size": 8, "lr": 0.002, "checkpoint_every": 5, "log_every": 2},
    "perturbation": {"train_gamma": 0.25, "test_gammas": [0.0, 0.25, 1.5]},
    "methods": [
        {"name": "ut", "kind": "ut", "width": 16, "depth": 2, "heads": 2, "patch": [1, 4, 4]},
        {
            "name": "ut_c",
            "kind": "ut",
            "width": 16,
            "depth": 2,
            "heads": 2,
            "patch": [1, 4, 4],
            "constraints": {"alpha": 0.5, "dual_lr": 50.0},
        },
    ],
}


def tiny(**overrides) -> ExperimentConfig:
    data = json.loads(json.dumps(TINY))
    data.update(overrides)
    return from_dict(ExperimentConfig, data)


@pytest.fixture(scope="module")
def tiny_video_run(tmp_path_factory):
    """One tiny run shared by the tests that only read it (the run itself, and its early exits)."""
    run = tmp_path_factory.mktemp("video") / "run"
    return run, run_experiment(tiny(), run, progress=False)


def test_denoising_run_writes_sweeps_curves_and_multipliers(tiny_video_run):
    run, results = tiny_video_run
    for name in ("report.md", "rmse_vs_gamma.png", "loss_vs_layer.png", "multipliers.png", "results.json"):
        assert (run / name).exists(), name
    assert results["gammas"] == [0.0, 0.25, 1.5]
    for m in results["methods"].values():
        rmse = m["rmse_mean"]
        assert all(0 < v < 255 for v in rmse)
        assert rmse[-1] > rmse[0]  # more input noise, worse output
        assert len(m["layer_mse_mean"]["0.25"]) == 3  # f_0..f_2
    assert "multipliers_per_seed" in results["methods"]["ut_c"]
    assert max(results["methods"]["ut_c"]["multipliers_per_seed"][0]) > 0  # α = 0.5 binds
    report = (run / "report.md").read_text()
    assert "held-out videos" in report
    assert "carphone" in report
    assert "Training time per step" in report
    assert all(m["step_seconds"] > 0 for m in results["methods"].values())


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_interrupted_constrained_denoiser_resumes_to_identical_results(tmp_path, fraction):
    """Also with subsampled intermediate readouts: the subset generator resumes with the multipliers."""
    method = json.loads(json.dumps(TINY["methods"][1]))
    method["constraints"]["readout_fraction"] = fraction
    cfg = tiny(methods=[method])
    ref = run_experiment(cfg, tmp_path / "ref", progress=False)

    def interrupt(unit, step):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "cut", progress=False, on_step=interrupt)
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True, progress=False)

    def untimed(methods):  # step times are measurements, not results (and a resumed unit has none)
        return {k: {f: v for f, v in m.items() if f != "step_seconds"} for k, m in methods.items()}

    assert untimed(resumed["methods"]) == untimed(ref["methods"])
    assert resumed["methods"]["ut_c"]["step_seconds"] is None


def test_sweep_at_gamma_zero_is_the_clean_metric():
    videos = [
        torch.randint(0, 256, (10, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ]
    clean = torch.stack([ClipDataset(videos, frames=4, crop=16, clips=6, seed=1)[i] for i in range(6)])
    model = VideoDenoiser(
        "vit", 4, 1, 16, 16, (1, 4, 4), 16, 2, 2, generator=torch.Generator().manual_seed(0)
    )
    sweep = evaluate_denoiser(
        model, clean, Perturbation("gaussian", 0.0, sigma=0.3), [0.0, 1.0], seed=0, chunk=4
    )
    with torch.no_grad():
        assert sweep["0.0"]["rmse"] == pytest.approx(rmse_255(model(clean).prediction(), clean), rel=1e-12)
    assert sweep["1.0"]["rmse"] != sweep["0.0"]["rmse"]


def test_clip_stream_resumes_and_visits_every_clip_once_per_epoch():
    videos = [
        torch.randint(0, 256, (12, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    ]
    data = ClipDataset(videos, frames=4, crop=8, clips=12, seed=0)
    noise = Perturbation("gaussian", 0.1, sigma=0.2)
    stream = ClipStream(data, 4, noise, torch.Generator().manual_seed(5))
    first = [stream.next() for _ in range(3)]  # one epoch
    seen = torch.cat([clean for _, clean in first])
    assert len({tuple(c.flatten()[:32].tolist()) for c in seen}) == 12
    state = stream.state_dict()
    ahead = [stream.next() for _ in range(2)]
    again = ClipStream(data, 4, noise, torch.Generator().manual_seed(99))
    again.load_state_dict(state)
    for (a_noisy, a_clean), (b_noisy, b_clean) in zip(ahead, [again.next() for _ in range(2)], strict=True):
        assert torch.equal(a_clean, b_clean)
        assert torch.equal(a_noisy, b_noisy)
    with pytest.raises(ValueError, match="exceeds the 12 training clips"):
        ClipStream(data, 13, noise, torch.Generator())


def test_a_bad_user_video_is_named_or_skipped_and_counted(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"this is not a video")
    cfg = tiny(task={**TINY["task"], "test_sources": [str(bad)]})
    with pytest.raises(VideoDecodeError, match=r"broken\.avi"):
        run_experiment(cfg, tmp_path / "run", progress=False)


def test_skip_bad_reports_how_many_files_were_skipped(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"this is not a video")
    cfg = tiny(
        task={**TINY["task"], "test_sources": ["carphone", str(bad)], "skip_bad": True},
        methods=[TINY["methods"][0]],
    )
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    assert len(results["skipped_files"]) == 1
    assert "broken.avi" in results["skipped_files"][0][0]
    assert "skipped (task.skip_bad): 1" in (tmp_path / "run" / "report.md").read_text()


def test_embedding_perturbation_runs_and_hurts_with_gamma(tmp_path):
    cfg = tiny(
        methods=[TINY["methods"][0]],
        perturbation={"train_gamma": 0.1, "test_gammas": [0.0, 2.0], "target": "embedding"},
    )
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    rmse = results["methods"]["ut"]["rmse_mean"]
    assert rmse[1] > rmse[0]


def test_seed_data_does_not_depend_on_what_ran_before(tmp_path):
    from unrolled.experiments.denoising import DenoisingData

    cfg = tiny()
    first = DenoisingData(cfg, 0)
    first.split.train.set_epoch(7)  # as a training stream leaves the cached dataset
    again = DenoisingData(cfg, 0)
    assert again.sigma == first.sigma
    assert torch.equal(again.test, first.test)


def test_exits_of_a_finished_video_run(tiny_video_run, capsys):
    """``unrolled exits``: the checkpointed denoisers truncated and with per-clip small-step exits."""
    from unrolled.cli import main

    run, results = tiny_video_run
    assert main(["exits", str(run), "--samples", "16"]) == 0
    out = json.loads((run / "exits.json").read_text())
    assert set(out["methods"]) == {"ut", "ut_c"}
    for name, m in out["methods"].items():
        # the reloaded denoiser on the run's test clips at the training γ scores what the run measured
        assert m["full"]["mean"] == pytest.approx(results["methods"][name]["rmse_mean"][1], rel=1e-4)
        assert m["fixed"][-1] == pytest.approx(m["full"]["mean"], rel=1e-6)
        assert all(1.0 <= v <= m["depth"] for v in m["small_step"]["mean_layers"])
    assert (run / "exit_curves.png").is_file() and "| denoiser |" in capsys.readouterr().out
