"""ConstrainedSFTTrainer against TRL's SFTTrainer and a naive computation, on a tiny Llama built in-process."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from unrolled.perturb import Perturbation  # noqa: E402
from unrolled.train.hf import CONSTRAINTS_FILE  # noqa: E402
from unrolled.train.sft import ConstrainedSFTConfig, ConstrainedSFTTrainer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PAIRS = [
    ("what is the capital of france", " paris it is a city in europe"),
    ("tell me a joke", " no thanks"),
    ("hello", " hi there"),
    ("hi", " hello there it is a city"),
]


def tokenizer():
    words = " ".join(p + c for p, c in PAIRS).split()
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(words))}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def dataset():
    return Dataset.from_list([{"prompt": p, "completion": c} for p, c in PAIRS])


def tiny_llama(vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=vocab, pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


# the constraint as Sec. 5.3 of the paper writes it (the checks below compare with its naive form): absolute
# slacks, f_(l-1) detached, every token read, unbounded multipliers, a dual step every optimizer step
PAPER_FORM = dict(
    relative_slack=False, detach_previous=True, readout_token_fraction=1.0, multiplier_max=None, dual_every=1
)


def common(out: Path, **kw) -> dict:
    return dict(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=1, report_to="none", use_cpu=True,
        learning_rate=1e-3, disable_tqdm=True, logging_steps=1, save_strategy="no", seed=0, **kw,
    )  # fmt: skip


def _grads_and_loss(trainer, model, batch):
    model.train()
    model.zero_grad()
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters()]


def test_the_default_is_the_recipe_the_sft_study_measured(tmp_path):
    """ConstrainedSFTConfig's defaults are sft_recipes' attached_margin setting, field for field (the study's
    numbers in docs/CONSTRAINTS.md section 6 are the defaults' numbers)."""
    from unrolled.experiments.config import load_config, resolve_config
    from unrolled.experiments.sft.unit import _objective_fields

    study = load_config(resolve_config("sft_recipes"))
    (method,) = [m for m in study.methods if m.name == "attached_margin"]
    default = ConstrainedSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    measured = _objective_fields(method)
    assert {k: getattr(default, k) for k in measured} == measured
    assert default.constraint_config().task_weight_floor == 0.25  # the diagnosis stays on


def test_with_zero_multipliers_the_gradient_is_sfttrainers(tmp_path):
    tok = tokenizer()
    base = tiny_llama(len(tok))
    plain = trl.SFTTrainer(
        model=copy.deepcopy(base),
        args=trl.SFTConfig(**common(tmp_path)),
        train_dataset=dataset(),
        processing_class=tok,
    )
    ours = ConstrainedSFTTrainer(
        model=copy.deepcopy(base), args=ConstrainedSFTConfig(**common(tmp_path), constraint_alpha=0.1),
        train_dataset=dataset(), processing_class=tok,
    )  # fmt: skip
    batch = next(iter(plain.get_train_dataloader()))
    loss_a, grads_a = _grads_and_loss(plain, plain.model, batch)
    loss_b, grads_b = _grads_and_loss(ours, ours.model, batch)
    assert loss_a == loss_b
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _naive_lagrangian(model, batch, lam, alpha):
    """Every layer's logits materialised, TRL's masks (labels -100 not trained), f_L + Σ λ_l s_l."""
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
    )
    labels = batch["labels"][:, 1:]
    losses = []
    for l in range(model.config.num_hidden_layers + 1):
        logits = (
            out.logits
            if l == model.config.num_hidden_layers
            else model.lm_head(model.model.norm(out.hidden_states[l]))
        )
        losses.append(
            F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        )
    f = torch.stack(losses)
    slacks = f[1:] - (1 - alpha) * f[:-1].detach()
    return f[-1] + (lam.to(f.dtype) * slacks).sum()


def test_with_multipliers_the_loss_is_the_naive_lagrangian_and_masks_are_trls(tmp_path):
    tok = tokenizer()
    model = tiny_llama(len(tok))
    trainer = ConstrainedSFTTrainer(
        model=model, args=ConstrainedSFTConfig(**common(tmp_path), **PAPER_FORM, constraint_alpha=0.2, completion_only_loss=True),
        train_dataset=dataset(), processing_class=tok,
    )  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    lam = torch.tensor([0.5, 1.5, 3.0], dtype=torch.float64)
    trainer.objective.multipliers.value = lam.clone()
    loss, grads = _grads_and_loss(trainer, model, batch)
    model.zero_grad()
    naive = _naive_lagrangian(model, batch, lam, 0.2)
    naive.backward()
    assert loss == pytest.approx(float(naive.detach()), rel=1e-5)
    for a, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    # the tokens we read out are TRL's: its fused head's label mask, completion tokens only
    with torch.no_grad():
        fused = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}, fused_lm_head=True)
    assert torch.equal(fused.label_mask, batch["labels"][:, 1:] != -100)
    prompt_len = len(tok("what is the capital of france")["input_ids"])
    assert (batch["labels"][0, :prompt_len] == -100).all()  # completion only


def test_gradient_checkpointing_gives_the_same_gradient_with_intermediate_readouts(tmp_path):
    tok = tokenizer()
    grads = []
    for checkpointing in (False, True):
        model = tiny_llama(len(tok))
        cfg = ConstrainedSFTConfig(
            **common(tmp_path), constraint_alpha=0.2, gradient_checkpointing=checkpointing
        )
        trainer = ConstrainedSFTTrainer(model=model, args=cfg, train_dataset=dataset(), processing_class=tok)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer.objective.multipliers.value = torch.tensor([0.5, 1.5, 3.0], dtype=torch.float64)
        batch = next(iter(trainer.get_train_dataloader()))
        grads.append(_grads_and_loss(trainer, model, batch))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_token_subsampling_is_unbiased(tmp_path):
    from unrolled.models.hf import LanguageModelSolver

    tok = tokenizer()
    model = tiny_llama(len(tok)).eval()
    trainer = trl.SFTTrainer(
        model=model, args=trl.SFTConfig(**common(tmp_path)), train_dataset=dataset(), processing_class=tok
    )
    batch = next(iter(trainer.get_train_dataloader()))
    solver = LanguageModelSolver(model, chunk_tokens=3)
    with torch.no_grad():
        state = solver(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).states[1]
        exact = float(solver.lens.token_mean(state, batch["labels"]))
        g = torch.Generator().manual_seed(0)
        draws = torch.tensor(
            [float(solver.lens.token_mean(state, batch["labels"], 0.3, g)) for _ in range(600)]
        )
    half_width = 3 * float(draws.std()) / len(draws) ** 0.5
    assert abs(float(draws.mean()) - exact) < half_width
    assert float(draws.std()) > 0  # it does subsample


def test_uniform_noise_has_trls_neftune_scale():
    from transformers.integrations.neftune import neftune_post_forward_hook

    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 64)
    emb.neftune_noise_alpha = 5.0
    emb.train()
    ids = torch.randint(0, 50, (4, 30))
    clean = emb.weight[ids]
    theirs = neftune_post_forward_hook(emb, (ids,), clean.clone()) - clean
    ours = Perturbation("uniform", 5.0).noise(clean, torch.Generator().manual_seed(0))
    bound = 5.0 / (30 * 64) ** 0.5
    for eps in (theirs, ours):
        assert (
            float(eps.detach().abs().max()) <= bound + 1e-7 and float(eps.detach().abs().max()) > 0.99 * bound
        )
        assert abs(float(eps.abs().mean()) - bound / 2) < 0.02 * bound  # uniform on [-bound, bound]


def test_a_resumed_sft_run_holds_its_multipliers(tmp_path):
    tok = tokenizer()
    args = dict(**PAPER_FORM, constraint_alpha=0.3, dual_lr=2.0, per_device_train_batch_size=2)

    def run(out, seed=0, **kw):
        t = ConstrainedSFTTrainer(
            model=tiny_llama(len(tok), seed), args=ConstrainedSFTConfig(**{**common(out), **args, **kw}),
            train_dataset=dataset(), processing_class=tok,
        )  # fmt: skip
        return t

    whole = run(tmp_path / "whole", max_steps=4)
    whole.train()
    cut = run(tmp_path / "cut", max_steps=4, save_strategy="steps", save_steps=2)
    cut.train()
    assert (tmp_path / "cut" / "checkpoint-2" / CONSTRAINTS_FILE).is_file()
    resumed = run(tmp_path / "cut", seed=5, max_steps=4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-2"))
    assert resumed.objective.multipliers.steps == 4 and whole.objective.multipliers.value.max() > 0
    torch.testing.assert_close(resumed.objective.multipliers.value, whole.objective.multipliers.value)


_ACCELERATE_SCRIPT = """
import json, os, sys, torch
sys.path.insert(0, {tests!r})
from test_sft import PAPER_FORM, ConstrainedSFTConfig, ConstrainedSFTTrainer, common, dataset, tiny_llama, tokenizer
torch.set_num_threads(1)
tok = tokenizer()
args = ConstrainedSFTConfig(**{{**common({out!r}), **PAPER_FORM, "max_steps": 3, "per_device_train_batch_size": 2}}, constraint_alpha=0.3, dual_lr=2.0)
trainer = ConstrainedSFTTrainer(model=tiny_llama(len(tok)), args=args, train_dataset=dataset(), processing_class=tok)
trainer.train()
json.dump(trainer.objective.multipliers.value.tolist(), open(os.path.join({out!r}, f"rank{{os.environ['RANK']}}.json"), "w"))
torch.distributed.destroy_process_group()
"""


def test_two_gloo_processes_under_accelerate_hold_identical_multipliers(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(_ACCELERATE_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # accelerate's multi-process launcher (--multi_gpu) runs on CPUs too, over gloo
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1 and max(r0) > 0
