"""Scale-equivariant linear transformers and Memformers (``normalize=True``): on a prompt with inputs scaled
by c and labels by c′ every layer predicts exactly c′ times what it predicts on the original prompt, for any
weights (float64, every model kind and both layouts); with the option off the models are today's."""

from __future__ import annotations

import pytest
import torch

from unrolled.models import LinearTransformer
from unrolled.models.memformer import CGDMemformer, LFOMMemformer, RecurrentMemformer, prompt_scale
from unrolled.models.mixture import MixtureOfExperts
from unrolled.tasks import RegressionTask
from unrolled.tasks.regression import RegressionBatch, RegressionConfig

F64 = torch.float64
D, N, L = 5, 20, 3

KINDS = {
    "lt": lambda **kw: LinearTransformer(D, N, L, **kw),
    "lt_gdpp": lambda **kw: LinearTransformer(D, N, L, B="free", **kw),
    "lt_gdpp_small_d": lambda **kw: LinearTransformer(2, N, L, B="free", **kw),  # batch-last elementwise path
    "lt_direct": lambda **kw: LinearTransformer(D, N, L, attention="direct", **kw),
    "lt_heads": lambda **kw: LinearTransformer(D, N, L, heads=2, **kw),
    "cgd": lambda **kw: CGDMemformer(D, N, L, **kw),
    "lfom": lambda **kw: LFOMMemformer(D, N, L, gamma_init=0.7, **kw),
    "lfom_gdpp": lambda **kw: LFOMMemformer(
        D, N, L, B="free", gamma_init=0.7, **kw
    ),  # memformer_scale_free_shift's
    "lfom_plus_gdpp": lambda **kw: LFOMMemformer(
        D, N, L, B="free", gamma_init=0.3, include_current=False, **kw
    ),
    "recurrent": lambda **kw: RecurrentMemformer(D, N, L, A="scalar", heads=2, **kw),
}


def _build(kind: str, normalize: bool, seed: int = 0) -> torch.nn.Module:
    model = KINDS[kind](normalize=normalize, generator=torch.Generator().manual_seed(seed), init_std=0.3)
    with torch.no_grad():  # memory coefficients away from their neutral init, so the memory matters
        for name, p in model.named_parameters():
            if name in ("alpha", "gamma", "beta"):
                p.add_(
                    0.2
                    * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=p.dtype)
                )
    return model.to(F64)


def _batch(d: int, seed: int = 3) -> RegressionBatch:
    task = RegressionTask(RegressionConfig(d=d, n=N, covariance="isotropic"), seed=0)
    return task.sample(16, torch.Generator().manual_seed(seed), dtype=F64)


def _scaled(b: RegressionBatch, c: float, c2: float) -> RegressionBatch:
    return RegressionBatch(b.X * c, b.y * c2, b.x_query * c, b.y_query * c2, b.w_star * c2 / c)


def _predictions(model, batch) -> torch.Tensor:
    traj = model(batch)
    return torch.stack([traj.readout(s) for s in traj.states])  # [L + 1, B]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(("c", "c2"), [(3.0, 9.0), (0.2, 5.0), (7.0, -0.5)])
def test_every_layer_scales_with_the_labels_and_ignores_the_input_scale(kind, c, c2):
    model = _build(kind, normalize=True)
    batch = _batch(model.d)
    base, scaled = _predictions(model, batch), _predictions(model, _scaled(batch, c, c2))
    torch.testing.assert_close(scaled, c2 * base, rtol=1e-10, atol=1e-12)
    assert base[1:].abs().min() > 0  # the predictions are not trivially zero


@pytest.mark.parametrize("kind", ["lt", "lfom", "lfom_plus_gdpp"])
def test_without_normalize_a_change_of_scale_is_not_a_change_of_units(kind):
    """The reason for the option: unnormalised, a layer's update grows as c² relative to the labels."""
    model = _build(kind, normalize=False)
    batch = _batch(model.d)
    base, scaled = _predictions(model, batch), _predictions(model, _scaled(batch, 3.0, 3.0))
    assert not torch.allclose(scaled[1:], 3.0 * base[1:], rtol=1e-3)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_normalize_off_is_todays_model(kind):
    """Same parameters (names, values: old checkpoints load) and the same outputs, bit for bit."""
    today = KINDS[kind](generator=torch.Generator().manual_seed(0), init_std=0.3).to(F64)
    off = _build(kind, normalize=False)
    off.load_state_dict(today.state_dict())
    assert list(off.state_dict()) == list(today.state_dict())
    batch = _batch(today.d)
    assert torch.equal(_predictions(off, batch), _predictions(today, batch))


def test_normalized_model_is_the_attention_scaled_by_the_second_moment():
    """For B = 0, normalising the inputs is the layer of the unnormalised model with A / s, s = r² the
    context's mean squared input entry, per prompt (the form docs/MODELS.md gives)."""
    model = _build("lt", normalize=True)
    batch = _batch(D)
    s = prompt_scale(batch.tokens()) ** 2  # [B]
    one = LinearTransformer(D, N, 1, generator=torch.Generator().manual_seed(0)).to(F64)
    one.layers[0].load_state_dict(model.layers[0].state_dict())
    expected = []
    for i in range(batch.batch_size):
        single = RegressionBatch(*(t[i : i + 1] for t in batch.astuple()))
        with torch.no_grad():
            one.layers[0].A.copy_(model.layers[0].A / s[i])
        expected.append(one(single).prediction())
    torch.testing.assert_close(
        model(batch).states[1][:, -1, -1] * -1, torch.cat(expected), rtol=1e-10, atol=1e-12
    )


def test_a_mixture_of_normalized_experts_is_equivariant_and_experts_must_agree():
    experts = [_build("lfom_plus_gdpp", normalize=True, seed=s) for s in (0, 1)]
    mixture = MixtureOfExperts(experts, gate_init=[0.6, 0.5]).to(F64)
    batch = _batch(D)
    base, scaled = _predictions(mixture, batch), _predictions(mixture, _scaled(batch, 2.5, 6.25))
    torch.testing.assert_close(scaled, 6.25 * base, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="normalize"):
        MixtureOfExperts([_build("lfom", True), _build("lfom", False)])


def test_the_config_option_builds_it_and_refuses_the_lfom():
    from unrolled.experiments.regression import LearnedMethod, build_model
    from unrolled.validation import ConfigError

    m = build_model(LearnedMethod(name="m", kind="memformer_cgd", normalize=True), D, N, 2, torch.Generator())
    assert m.normalize
    with pytest.raises((ConfigError, ValueError), match="normalize"):
        LearnedMethod(name="m", kind="lfom", normalize=True)
