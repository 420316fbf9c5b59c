"""DUST, the TV reference and the robustness study's pieces inside the video-denoising experiment."""

import json

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle

from unrolled.config import from_dict
from unrolled.experiments import ExperimentConfig, run_experiment
from unrolled.experiments.denoising import DenoisingData, reference, unit
from unrolled.perturb import LayerNoise
from unrolled.solvers.tv import TVDenoiser, choose_weight, tv_denoise
from unrolled.validation import ConfigError

from .test_denoising import TINY

METHOD = {"width": 16, "depth": 2, "heads": 2, "patch": [1, 4, 4]}


def study(**overrides) -> ExperimentConfig:
    data = json.loads(json.dumps(TINY))
    data["perturbation"]["test_gammas"] = [0.0, 0.25, 0.5, 1.5]
    data["methods"] = [
        {"name": "ut", "kind": "ut", **METHOD},
        {"name": "ut_c", "kind": "ut", **METHOD, "baseline": "ut",
         "constraints": {"alpha": 0.5, "dual_lr": 50.0}},
        {"name": "ut_clean", "kind": "ut", **METHOD, "train_gamma": 0.0, "steps": 6},
        {"name": "ut_clean_c", "kind": "ut", **METHOD, "train_gamma": 0.0, "steps": 6, "baseline": "ut_clean",
         "constraints": {"alpha": 0.5}, "layer_noise": {"scale": 0.3, "decay": 0.5}},
        {"name": "dust", "kind": "dust", **METHOD},
        {"name": "dust_c", "kind": "dust", **METHOD, "baseline": "dust", "constraints": {"alpha": 0.2}},
    ]  # fmt: skip
    data.update(overrides)
    return from_dict(ExperimentConfig, data)


def test_tv_reference_is_scikit_images_chambolle_on_each_clip():
    clips = torch.rand(3, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = tv_denoise(clips, 0.1)
    for got, clip in zip(out, clips, strict=True):
        assert np.array_equal(got[:, 0].numpy(), denoise_tv_chambolle(clip[:, 0].numpy(), weight=0.1))
    colour = torch.rand(1, 4, 3, 8, 8, dtype=torch.float64)
    expected = denoise_tv_chambolle(colour[0].numpy(), weight=0.2, channel_axis=1)
    assert np.array_equal(tv_denoise(colour, 0.2)[0].numpy(), expected)
    assert torch.equal(tv_denoise(clips, 0.0), clips)  # weight 0: the noisy clip itself
    trajectory = TVDenoiser(0.1)(clips)
    assert torch.equal(trajectory.prediction(), out) and torch.equal(trajectory.prediction(0), clips)


def test_choose_weight_takes_the_validation_minimum():
    clean = torch.rand(4, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noisy = clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    best, scores = choose_weight(noisy, clean, [0.0, 0.05, 0.2, 5.0])
    assert best == min(scores, key=scores.get)
    assert scores[best] < scores[0.0]  # TV helps on noisy clips
    assert best != 5.0  # an extreme weight flattens everything


def test_study_run_pairs_methods_and_tv_never_sees_test_clips(tmp_path, monkeypatch):
    seen, applied = [], {"train": 0, "eval": 0, "built": 0}

    def spy_choose(noisy, clean, weights):
        seen.append(clean.clone())
        return choose_weight(noisy, clean, weights)

    class SpyNoise(LayerNoise):
        def __init__(self, *args, **kwargs):
            applied["built"] += 1
            super().__init__(*args, **kwargs)

        def _hook(self, c):
            inner = super()._hook(c)

            def hook(module, args, output):
                applied["train" if module.training else "eval"] += 1
                return inner(module, args, output)

            return hook

    monkeypatch.setattr(reference, "choose_weight", spy_choose)
    monkeypatch.setattr(unit, "LayerNoise", SpyNoise)
    results = run_experiment(study(), tmp_path / "run", progress=False)

    test_clips = [t for t in DenoisingData(study(), 0).test if t.std() > 0]  # (blank crops occur in both)
    assert len(test_clips) > 0
    for clean in seen:
        assert not any(torch.equal(c, t) for c in clean for t in test_clips)
    # layer noise: built for the one method that asks for it, applied in training only (1 hook × 6 steps)
    assert applied == {"built": 1, "train": 6, "eval": 0}

    assert len(seen) == 4  # one weight choice per test γ; the blind one is the training γ's (a test γ too)
    tv, blind = results["references"]["tv_tuned"], results["references"]["tv_blind"]
    assert len(tv["rmse_mean"]) == 4 and tv["weight_per_seed"][0][0] == 0.0  # clean input: no smoothing
    assert len(set(blind["weight_per_seed"][0])) == 1  # one weight for every γ: the training γ's
    assert blind["weight_per_seed"][0][1] == tv["weight_per_seed"][0][1]  # γ = 0.25 is the training level
    assert blind["rmse_mean"][1] == tv["rmse_mean"][1]
    for t, b in zip(tv["rmse_mean"], blind["rmse_mean"], strict=True):
        assert t <= b + 0.5  # tuned per γ is (up to validation/test mismatch) no worse than blind
    methods = results["methods"]
    assert methods["ut_clean"]["train_gamma"] == 0.0 and methods["ut_clean"]["steps"] == 6
    assert methods["ut"]["train_gamma"] == 0.25 and methods["ut"]["steps"] == 16
    assert len(methods["dust"]["layer_mse_mean"]["0.25"]) == 3
    gaps = results["gaps"]
    assert set(gaps) == {"ut_c", "ut_clean_c", "dust_c"}
    g = gaps["ut_c"]["at_max"]
    assert g["gamma"] == 1.5
    assert g["mean"] == pytest.approx(methods["ut_c"]["rmse_mean"][-1] - methods["ut"]["rmse_mean"][-1])
    assert gaps["ut_clean_c"]["at_train"]["gamma"] == 0.0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Constrained − ERM" in report and "TV, weight tuned per test γ" in report
    assert (tmp_path / "run" / "robustness_gap.png").exists()


def test_a_baseline_must_be_an_unconstrained_method_of_the_config():
    with pytest.raises(ConfigError, match=r"methods.1.baseline.*'nope'"):
        study(methods=[{"name": "a", "kind": "ut", **METHOD},
                       {"name": "b", "kind": "ut", **METHOD, "baseline": "nope", "constraints": {}}])  # fmt: skip
    with pytest.raises(ConfigError, match="'tv' is the name of the TV reference"):
        study(methods=[{"name": "tv", "kind": "ut", **METHOD}])
