"""Early exit (issue 31): every stepper computes its model's own layers; the runner's exits equal those simulated
on the full trajectory; no layer runs on a sample that left (counted by hooks); PABEE's counter; calibration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from unrolled.exits import (
    ACCURACY,
    MSE,
    Budget,
    Confidence,
    Entropy,
    FixedDepth,
    Patience,
    SmallStep,
    State,
    Stepper,
    calibrate,
    layer_predictions,
    make_rule,
    run_with_exit,
    simulate_exits,
    stepper_for,
)
from unrolled.models.denoisers import VideoDenoiser
from unrolled.models.dust import DUSTDenoiser
from unrolled.models.icl import GPT2Learner, Prompts, UTLearner
from unrolled.models.memformer import CGDMemformer, LFOMMemformer, LinearTransformer
from unrolled.models.text_classifier import UTTextClassifier
from unrolled.tasks.regression import RegressionConfig, RegressionTask

B = 12


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _regression() -> Any:
    return RegressionTask(RegressionConfig(d=5, n=20, covariance="isotropic"), 0).sample(B, _gen(1))


def _prompts() -> Prompts:
    g = _gen(2)
    xs = torch.randn(B, 9, 5, generator=g)
    w = torch.randn(B, 5, generator=g)
    return Prompts(xs, (xs @ w.unsqueeze(-1)).squeeze(-1), w)


def _clips() -> Tensor:
    return torch.rand(B, 4, 1, 8, 8, generator=_gen(3))


def _tokens() -> dict[str, Tensor]:
    ids = torch.randint(1, 50, (B, 10), generator=_gen(4))
    mask = torch.ones(B, 10, dtype=torch.long)
    mask[::2, 7:] = 0  # padding on every other sample
    return {"input_ids": ids * mask, "attention_mask": mask}


def _bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    from unrolled.models.hf import EncoderSolver

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32)  # fmt: skip
    return EncoderSolver(transformers.BertModel(config), num_labels=3, generator=_gen(5))


# fmt: off
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any], str]] = {
    "linear_transformer": (lambda: LinearTransformer(5, 20, 4, init_std=0.3, generator=_gen()), _regression, "reg"),
    "linear_transformer_free_B": (
        lambda: LinearTransformer(5, 20, 3, B="free", init_std=0.3, generator=_gen()), _regression, "reg"),
    "cgd_memformer": (lambda: CGDMemformer(5, 20, 4, init_std=0.3, generator=_gen()), _regression, "reg"),
    "lfom_memformer": (lambda: LFOMMemformer(5, 20, 4, init_std=0.3, gamma_init=0.5, generator=_gen()), _regression, "reg"),
    "normalised": (lambda: LinearTransformer(5, 20, 3, init_std=0.3, normalize=True, generator=_gen()),
                   _regression, "reg"),
    "ut_learner": (lambda: UTLearner(5, 9, width=16, depth=3, heads=2, seed=0), _prompts, "reg"),
    "video_ut": (lambda: VideoDenoiser("ut", 4, 1, 8, 8, (2, 4, 4), 16, 3, 2, init_std=0.2, generator=_gen()),
                 _clips, "reg"),
    "video_vit": (lambda: VideoDenoiser("vit", 4, 1, 8, 8, (2, 4, 4), 16, 3, 2, generator=_gen()), _clips, "reg"),
    "dust": (lambda: DUSTDenoiser(4, 1, 8, 8, (2, 4, 4), 12, 3, generator=_gen()), _clips, "reg"),
    "text_ut": (lambda: UTTextClassifier(50, 3, width=16, depth=4, heads=2, max_length=16, embeddings="scratch",
                                         init_std=0.3, generator=_gen()), _tokens, "cls"),
}
# fmt: on


def _build(name: str) -> tuple[nn.Module, Any, str]:
    make, inputs, kind = MODELS[name]
    model = make().eval()
    return model, inputs(), kind


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


CASES = [*MODELS, "gpt2_learner", "bert"]


def _case(name: str) -> tuple[nn.Module, Any, str]:
    if name == "gpt2_learner":
        pytest.importorskip("transformers")
        return GPT2Learner(5, 9, width=16, depth=3, heads=2, seed=0).eval(), _prompts(), "reg"
    if name == "bert":
        return _bert().eval(), _tokens(), "cls"
    return _build(name)


@pytest.mark.parametrize("name", CASES)
def test_a_stepper_computes_the_models_own_layers(name):
    model, inputs, _ = _case(name)
    with torch.no_grad():
        reference = _call(model, inputs).predictions()  # the model's own forward, every layer
    steps = layer_predictions(model, inputs)
    torch.testing.assert_close(steps, reference, rtol=1e-5, atol=1e-6)
    L = stepper_for(model).depth
    for k in (1, L):
        result = run_with_exit(model, inputs, FixedDepth(layers=k))
        torch.testing.assert_close(result.prediction, reference[k], rtol=1e-5, atol=1e-6)
        assert result.layers.tolist() == [k] * B
        assert result.executed == (B,) * k + (0,) * (L - k)


def _mixed_rules(kind: str, predictions: Tensor) -> list[Any]:
    """Rules whose thresholds stop some samples early and some late, chosen from the full trajectory."""
    if kind == "reg":
        flat = predictions.reshape(predictions.shape[0], B, -1)
        steps = (flat[1:] - flat[:-1]).norm(dim=-1) / flat[1:].norm(dim=-1)  # [L, B]
        finite = steps[1][steps[1].isfinite()]
        return [SmallStep(tol=float(finite.median()) * 1.01),
                SmallStep(tol=float(steps[steps.isfinite()].median()), min_layer=2)]  # fmt: skip
    p = predictions[1:].softmax(-1)
    conf = p.amax(-1)
    entropy = -(p * p.log()).sum(-1)
    return [Confidence(threshold_value=float(conf.median())), Entropy(threshold_value=float(entropy.median())),
            Patience(patience=1), Patience(patience=2, min_layer=2)]  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_the_runners_exits_are_those_simulated_on_the_full_trajectory_and_no_skipped_layer_runs(name):
    model, inputs, kind = _case(name)
    stepper = stepper_for(model)
    rows = [0] * stepper.depth
    with torch.no_grad():
        reference = _call(model, inputs).predictions()
    # every entry point of a layer counts the samples it is given (the linear layers are entered by their
    # label-only and batch-last methods, not forward, so hooks would miss them)
    patched = [_count_rows(layer, i, rows) for i, layer in enumerate(stepper.layers)]
    try:
        rules = _mixed_rules(kind, reference)
        some_early = False
        for rule in rules:
            rows[:] = [0] * stepper.depth
            result = run_with_exit(stepper, inputs, rule)
            expected = simulate_exits(reference, rule)
            assert result.layers.tolist() == expected.layers.tolist(), rule
            torch.testing.assert_close(result.prediction, expected.prediction, rtol=1e-5, atol=1e-6)
            assert tuple(rows) == result.executed == expected.executed, rule  # hooks saw exactly these rows
            assert sum(rows) == int(result.layers.sum())
            some_early |= bool((result.layers < stepper.depth).any())
        assert some_early, "the thresholds should stop some samples before the last layer"
    finally:
        for layer, names in zip(stepper.layers, patched, strict=True):
            for name in names:
                delattr(layer, name)


ENTRY_POINTS = {"forward": 0, "label_delta_batch_first": 0, "forward_batch_last": -1, "label_delta": -1}


def _count_rows(layer: nn.Module, i: int, rows: list[int]) -> list[str]:
    """Wrap layer i's entry points so that each call adds its batch size to ``rows[i]``."""
    names = []
    for name, dim in ENTRY_POINTS.items():
        method = getattr(layer, name, None)
        if method is None:
            continue

        def counted(*args: Any, _method: Any = method, _dim: int = dim, **kwargs: Any) -> Any:
            rows[i] += args[0].shape[_dim]
            return _method(*args, **kwargs)

        setattr(layer, name, counted)
        names.append(name)
    return names


class _Scripted(nn.Module):
    """A 'model' whose layer l outputs fixed logits ``script[l]`` ``[B, C]``: a PABEE check by hand."""

    def __init__(self, script: Tensor) -> None:
        super().__init__()
        self.script = script
        self.layers = nn.ModuleList(nn.Identity() for _ in range(script.shape[0] - 1))

    def stepper(self) -> Stepper:
        def step(l: int, state: State) -> State:
            self.layers[l - 1](state.batch["i"])
            return State({"i": state.batch["i"], "l": state.batch["l"] + 1})

        return Stepper(
            len(self.layers),
            lambda _x: State({"i": torch.arange(self.script.shape[1]), "l": torch.zeros(self.script.shape[1], dtype=torch.long)}),
            step,
            lambda s: self.script[s.batch["l"], s.batch["i"]],
            tuple(self.layers),
        )  # fmt: skip


def _onehot(classes: list[list[int]]) -> Tensor:
    """``classes[l][b]`` -> logits ``[L + 1, B, 3]`` with that argmax."""
    return torch.nn.functional.one_hot(torch.tensor(classes), 3).float() * 4


def test_patience_counts_unchanged_predictions_as_pabee_does():
    # layers 0..5 (0: the embedding), 3 samples
    script = _onehot([[0, 0, 0], [1, 0, 2], [1, 1, 2], [1, 1, 0], [2, 1, 0], [2, 2, 0]])
    stepper = _Scripted(script).stepper()
    # sample 0: argmax 1,1,1 at layers 1-3 -> counter 1 after layer 2, 2 after layer 3
    # sample 1: 0,1,1,1,2 -> counter 0,0,1,2 -> stops at layer 4 with patience 2
    # sample 2: 2,2,0,0,0 -> 0,1,0,1,2 -> stops at layer 5 (the last) with patience 2
    assert run_with_exit(stepper, None, Patience(patience=2)).layers.tolist() == [3, 4, 5]
    assert run_with_exit(stepper, None, Patience(patience=1)).layers.tolist() == [2, 3, 2]
    assert run_with_exit(stepper, None, Patience(patience=1, min_layer=3)).layers.tolist() == [3, 3, 4]
    result = run_with_exit(stepper, None, Patience(patience=2))
    torch.testing.assert_close(result.prediction, script[[3, 4, 5], [0, 1, 2]])


def test_calibration_runs_the_fewest_layers_within_the_budget():
    # 100 samples, 4 layers: sample b is right from layer 1 + (b % 4) on; confidence grows with the layer
    L, n = 4, 100
    target = torch.zeros(n, dtype=torch.long)
    right_from = 1 + torch.arange(n) % 4
    layers = torch.arange(L + 1).view(-1, 1)
    right = layers >= right_from  # [L + 1, n]
    margin = layers.float().expand(L + 1, n)  # the logit gap: the same for every sample at a layer
    logits = torch.stack([torch.where(right, margin, -margin), torch.zeros(L + 1, n)], dim=-1)
    rule = Confidence(threshold_value=0.5)
    thresholds = [torch.sigmoid(torch.tensor(k - 0.5)).item() for k in range(1, L + 1)]  # exit at layer >= k
    exact = calibrate(logits, target, rule, thresholds, ACCURACY, Budget(0.0, relative=False))
    assert exact.full_quality == 1.0 and exact.point.quality == 1.0 and exact.point.mean_layers == 4.0
    loose = calibrate(logits, target, rule, thresholds, ACCURACY, Budget(0.25, relative=False))
    assert loose.point.quality == 0.75 and loose.point.mean_layers == 3.0  # 1 point in 4 lost: layer 3
    assert loose.rule.threshold == pytest.approx(thresholds[2])
    none = calibrate(logits, target, rule, thresholds[:2], ACCURACY, Budget(0.0, relative=False))
    assert none.rule is None and none.point is None and [p.quality for p in none.curve] == [0.25, 0.5]


def test_relative_budgets_on_a_loss_and_the_rules_errors():
    assert Budget(0.02).allows(MSE, 1.019, 1.0) and not Budget(0.02).allows(MSE, 1.03, 1.0)
    assert Budget(0.01, relative=False).allows(ACCURACY, 0.91, 0.92)
    with pytest.raises(TypeError, match=r"no layer-by-layer stepper.*UTLearner"):
        stepper_for(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="class logits"):
        run_with_exit(*_build("video_ut")[:2], Confidence(threshold_value=0.5))
    with pytest.raises(ValueError, match="unknown exit rule 'soon'"):
        make_rule("soon", 0.1)
    assert make_rule("patience", 3) == Patience(patience=3)
    with pytest.raises(ValueError, match="tol must be > 0"):
        SmallStep(tol=0.0)
