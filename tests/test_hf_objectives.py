"""The layerwise objectives on the Hugging Face trainers: the early-exit loss against a naive computation,
readouts only where the objective needs them, infeasibility in the logs, calibration before training."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

from tests.test_hf_trainer import Examples, args, solver  # noqa: E402
from tests.test_sft import PAPER_FORM, _grads_and_loss, common, dataset, tiny_llama, tokenizer  # noqa: E402
from unrolled.config import from_dict  # noqa: E402
from unrolled.constrained import ConstraintConfig, EarlyExitConfig, early_exit_scales  # noqa: E402
from unrolled.train.hf import ConstrainedTrainer  # noqa: E402
from unrolled.train.sft import ConstrainedSFTConfig, ConstrainedSFTTrainer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _layer_losses(model, batch):
    """f_0..f_L with every layer's logits materialised (an independent logit lens) and TRL's masks."""
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
    )
    labels = batch["labels"][:, 1:]
    depth = model.config.num_hidden_layers
    losses = []
    for l in range(depth + 1):
        logits = out.logits if l == depth else model.lm_head(model.model.norm(out.hidden_states[l]))
        flat = logits[:, :-1].reshape(-1, logits.shape[-1])
        losses.append(F.cross_entropy(flat, labels.reshape(-1), ignore_index=-100))
    return torch.stack(losses)


def test_sft_early_exit_loss_is_the_naive_weighted_sum_of_the_layers(tmp_path):
    tok = tokenizer()
    model = tiny_llama(len(tok))
    cfg = ConstrainedSFTConfig(
        **common(tmp_path), **PAPER_FORM, layer_objective="early_exit", early_exit_scale=0.5, early_exit_scale_type="l",
        completion_only_loss=True,
    )  # fmt: skip
    trainer = ConstrainedSFTTrainer(model=model, args=cfg, train_dataset=dataset(), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    loss, grads = _grads_and_loss(trainer, model, batch)
    model.zero_grad()
    w = torch.tensor([0.0, *early_exit_scales([1, 2, 3], 3, "l", 0.5)])
    naive = (w * _layer_losses(model, batch)).sum()
    naive.backward()
    assert loss == pytest.approx(float(naive.detach()), rel=1e-5)
    for a, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_with_zero_multipliers_no_layer_is_read_between_monitoring_steps(tmp_path):
    tok = tokenizer()
    base = tiny_llama(len(tok))
    plain = trl.SFTTrainer(
        model=copy.deepcopy(base), args=trl.SFTConfig(**common(tmp_path)), train_dataset=dataset(),
        processing_class=tok,
    )  # fmt: skip
    kw = {**common(tmp_path), "logging_steps": 10}
    ours = ConstrainedSFTTrainer(
        model=copy.deepcopy(base), args=ConstrainedSFTConfig(**kw, constraint_alpha=0.1, dual_every=4),
        train_dataset=dataset(), processing_class=tok,
    )  # fmt: skip
    reads = []
    lens_mean = ours.lens.token_mean
    ours.lens.token_mean = lambda *a, **k: reads.append(torch.is_grad_enabled()) or lens_mean(*a, **k)
    batch = next(iter(plain.get_train_dataloader()))
    ours.state.global_step = 1  # step 2: neither a dual step (every 4) nor a log (every 10)
    loss_a, grads_a = _grads_and_loss(plain, plain.model, batch)
    loss_b, grads_b = _grads_and_loss(ours, ours.model, batch)
    assert reads == []  # λ = 0: the constraints need no readout on this step
    assert loss_a == loss_b
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ours.state.global_step = 3  # step 4: a dual step measures every constrained layer, without a graph
    _grads_and_loss(ours, ours.model, batch)
    assert reads == [False, False, False]  # layers 0..2 (layer 3 is TRL's own loss)


def test_sft_flags_infeasible_constraints_in_its_logs(tmp_path, caplog):
    tok = tokenizer()
    kw = {**common(tmp_path), "max_steps": 12}
    cfg = ConstrainedSFTConfig(**kw, **PAPER_FORM, constraint_alpha=0.95, dual_lr=0.5, infeasibility_window=3)
    trainer = ConstrainedSFTTrainer(
        model=tiny_llama(len(tok)), args=cfg, train_dataset=dataset(), processing_class=tok
    )
    with caplog.at_level("WARNING", logger="unrolled.constrained"):
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs[-1]["infeasible_constraints"] >= 1  # a 20× cut per layer is out of reach of a tiny model
    assert any(k.startswith("infeasible/") for k in logs[-1])
    lam = [logs[-1][f"multiplier/{l}"] for l in (1, 2, 3)]
    assert logs[-1]["task_weight"] == pytest.approx(1 / (1 + sum(lam)))
    assert any("look infeasible" in r.message for r in caplog.records)


def test_sft_calibration_starts_every_constraint_feasible(tmp_path):
    tok = tokenizer()
    cfg = ConstrainedSFTConfig(
        **common(tmp_path), **PAPER_FORM, constraint_alpha=0.3, calibrate="relax", calibration_batches=1,
        calibration_margin=0.01,
    )  # fmt: skip
    trainer = ConstrainedSFTTrainer(
        model=tiny_llama(len(tok)), args=cfg, train_dataset=dataset(), processing_class=tok
    )
    trainer.train()
    cal = trainer.objective.calibration
    f = torch.tensor(cal.base_losses)
    slack = trainer.objective.constraints.slacks(f)
    assert (slack <= -0.01 * f[:-1] + 1e-5).all()
    assert all(a <= 0.3 for a in cal.alphas)


def test_constrained_trainer_early_exit_and_calibration(tmp_path):
    data = Examples(n=8)
    ee = ConstrainedTrainer(
        model=solver(), args=args(tmp_path / "ee", max_steps=2), train_dataset=data,
        constraints=EarlyExitConfig(scale_type="one", curriculum="gradual"),
    )  # fmt: skip
    ee.train()
    assert ee.objective.step == 2 and ee.objective.total_steps == 2
    logs = [h for h in ee.state.log_history if "loss" in h]
    assert logs[0]["task_weight"] == 1.0  # step 1 of 2: only the last layer is on yet
    assert logs[1]["task_weight"] == pytest.approx(1 / 3)  # step 2: t / T = 1/2 switches on every layer
    cal = from_dict(ConstraintConfig, {"alpha": 0.5, "calibrate": {"mode": "drop", "batches": 2}}, "c")
    tr = ConstrainedTrainer(
        model=solver(), args=args(tmp_path / "cal", max_steps=1), train_dataset=data, constraints=cal
    )
    tr.train()
    result = tr.objective.calibration
    kept = [l for l, r in enumerate(result.descent, start=1) if r is not None and r >= 0.5]
    assert list(result.layers) == kept


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"constrained_layers": [5]}, r"ConstrainedSFTConfig\.constrained_layers: layer 5 of a model with 3 layers"),
        ({"constraint_alphas": [0.1, 0.1]}, r"ConstrainedSFTConfig\.constraint_alphas: has 2 entries, the model has 3"),
        ({"layer_objective": "early_exit", "early_exit_layers": [2, 7]},
         r"ConstrainedSFTConfig\.early_exit_layers: layer 7 of a model with 3 layers"),
    ],
)  # fmt: skip
def test_sft_fields_are_checked_against_the_model_when_the_trainer_is_built(tmp_path, fields, message):
    """Not at the first step with an IndexError: the error names the field the user set."""
    from unrolled.validation import ConfigError

    tok = tokenizer()
    cfg = ConstrainedSFTConfig(**common(tmp_path), **fields)
    with pytest.raises(ConfigError, match=message):
        ConstrainedSFTTrainer(
            model=tiny_llama(len(tok)), args=cfg, train_dataset=dataset(), processing_class=tok
        )


def test_sft_config_errors_name_the_users_fields(tmp_path):
    from unrolled.validation import ConfigError

    with pytest.raises(ConfigError, match=r"^ConstrainedSFTConfig\.constraint_alpha: must be in \[0, 1\)"):
        ConstrainedSFTConfig(**common(tmp_path), constraint_alpha=1.5)
    with pytest.raises(ConfigError, match=r"^ConstrainedSFTConfig\.constraint_alphas\[1\]: must be < 1"):
        ConstrainedSFTConfig(**common(tmp_path), constraint_alphas=[0.1, 1.2, 0.1])
    with pytest.raises(ConfigError, match=r"^ConstrainedSFTConfig\.calibration_margin"):
        ConstrainedSFTConfig(**common(tmp_path), calibrate="relax", calibration_margin=2.0)


def test_the_trainer_checks_constraint_layers_against_the_model(tmp_path):
    from unrolled.validation import ConfigError

    with pytest.raises(ConfigError, match=r"layers: layer 9 of a model with 3 layers"):
        ConstrainedTrainer(model=solver(), args=args(tmp_path), train_dataset=Examples(n=4),
                           constraints=ConstraintConfig(alpha=0.1, layers=(1, 9)))  # fmt: skip
