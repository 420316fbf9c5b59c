"""The Trainer path of constrained learning against the own-model path, its logs, checkpoints and ranks."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unrolled.constrained.config import ConstraintConfig  # noqa: E402
from unrolled.constrained.factory import objective_from_config  # noqa: E402
from unrolled.models.hf import EncoderSolver  # noqa: E402
from unrolled.train.hf import CONSTRAINTS_FILE, ConstrainedTrainer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONSTRAINTS = ConstraintConfig(alpha=0.5, dual_lr=2.0)


class Examples(torch.utils.data.Dataset):
    """Fixed token sequences with padding and labels."""

    def __init__(self, n: int = 8, t: int = 10, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 100, (n, t), generator=g)
        lengths = torch.randint(3, t + 1, (n,), generator=g)
        self.mask = (torch.arange(t)[None] < lengths[:, None]).long()
        self.ids[self.mask == 0] = 0
        self.labels = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def solver(seed: int = 0) -> EncoderSolver:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, vocab_size=101,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return EncoderSolver(
        transformers.BertModel(cfg), num_labels=3, generator=torch.Generator().manual_seed(seed)
    )


def args(out: Path, **kw) -> transformers.TrainingArguments:
    base = dict(
        output_dir=str(out), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=4, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True,
    )  # fmt: skip
    return transformers.TrainingArguments(**{**base, **kw})


def test_the_trainer_takes_the_same_dual_step_as_the_own_model_path(tmp_path):
    model = solver()
    own = copy.deepcopy(model)
    data = Examples(n=4)
    trainer = ConstrainedTrainer(
        model=model, args=args(tmp_path, max_steps=1), train_dataset=data, constraints=CONSTRAINTS
    )
    trainer.train()
    # the own-model path: the library's objective on the same batch at the same starting weights
    objective, _ = objective_from_config(CONSTRAINTS, 3, own.per_sample_loss)
    batch = {"input_ids": data.ids, "attention_mask": data.mask}
    objective.loss(own(**batch), data.labels)
    objective.after_step(1)
    # the same slacks up to float32 summation order (the Trainer shuffles the batch)
    torch.testing.assert_close(
        trainer.objective.multipliers.value, objective.multipliers.value, rtol=1e-6, atol=1e-6
    )
    assert trainer.objective.multipliers.value.max() > 0  # α = 0.5 binds on an untrained model
    logged = trainer.state.log_history[0]
    assert {f"layer_loss/{l}" for l in range(4)} | {f"multiplier/{l}" for l in (1, 2, 3)} <= set(logged)


def test_a_resumed_trainer_holds_the_same_multipliers_as_an_uninterrupted_one(tmp_path):
    data = Examples(n=8)
    whole = ConstrainedTrainer(
        model=solver(),
        args=args(tmp_path / "whole", max_steps=6),
        train_dataset=data,
        constraints=CONSTRAINTS,
    )
    whole.train()
    first = ConstrainedTrainer(
        model=solver(),
        args=args(tmp_path / "cut", max_steps=6, save_strategy="steps", save_steps=3),
        train_dataset=data,
        constraints=CONSTRAINTS,
    )
    first.train()
    assert (tmp_path / "cut" / "checkpoint-3" / CONSTRAINTS_FILE).is_file()
    resumed = ConstrainedTrainer(
        model=solver(seed=7),  # other weights: everything must come from the checkpoint
        args=args(tmp_path / "cut", max_steps=6),
        train_dataset=data,
        constraints=CONSTRAINTS,
    )
    assert resumed.objective.multipliers.steps == 0
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-3"))
    assert resumed.objective.multipliers.steps == 6
    torch.testing.assert_close(resumed.objective.multipliers.value, whole.objective.multipliers.value)
    (tmp_path / "cut" / "checkpoint-3" / CONSTRAINTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="holds no multipliers"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-3"))


def test_erm_logs_layerwise_losses_and_takes_no_dual_step(tmp_path):
    trainer = ConstrainedTrainer(model=solver(), args=args(tmp_path, max_steps=2), train_dataset=Examples())
    trainer.train()
    assert not trainer.objective.constrained
    assert all(f"layer_loss/{l}" in trainer.state.log_history[0] for l in range(4))
    assert not any(k.startswith("multiplier/") for k in trainer.state.log_history[0])


_RANK_SCRIPT = """
import gc, json, os, sys, torch
sys.path.insert(0, {tests!r})
from test_hf_trainer import CONSTRAINTS, Examples, args, solver
from unrolled.train.hf import ConstrainedTrainer
torch.set_num_threads(1)
out = {out!r}
trainer = ConstrainedTrainer(model=solver(), args=args(out, max_steps=3, per_device_train_batch_size=2),
                             train_dataset=Examples(n=8), constraints=CONSTRAINTS)
trainer.train()
rank = int(os.environ["RANK"])
json.dump(trainer.objective.multipliers.value.tolist(), open(f"{{out}}/rank{{rank}}.json", "w"))
del trainer
gc.collect()  # the Trainer's DDP wrapper sits in reference cycles: it must go before its process group
torch.distributed.destroy_process_group()  # else gloo's threads may abort the interpreter's exit
"""


def test_two_gloo_processes_hold_identical_multipliers(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(_RANK_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1 and max(r0) > 0
