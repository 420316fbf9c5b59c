"""One unit of a text experiment: build a classifier, fine-tune it with the Trainer, test it over the γ grid.

The model is trained by :class:`~unrolled.train.hf.ConstrainedTrainer` in ``checkpoints/<method>/seed<s>/``
(Trainer checkpoints; the unit's ``.pt`` file records the last one, so an interrupted unit resumes from it),
then saved to ``models/<method>/seed<s>/`` (``save_pretrained`` and the tokenizer for Hugging Face encoders,
so ``unrolled audit`` and ``from_pretrained`` load it; a state dict for the UT) and tested: at every test γ,
the accuracy and the loss of every layer's readout on the held-out texts, and the share of layers that fail
to descend.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PrinterCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from unrolled.constrained.descent import violation_share
from unrolled.experiments.family import Unit, UnitContext
from unrolled.experiments.hf_progress import UnitProgress, quiet_transformers
from unrolled.experiments.objectives import objective_record
from unrolled.experiments.text.config import HFEncoderMethod, TextExperiment, UTTextMethod
from unrolled.experiments.text.data import TextSeedData, embedding_sigma, tokenizer_of
from unrolled.models.hf import EncoderSolver, load_model
from unrolled.models.text_classifier import UTTextClassifier
from unrolled.perturb import EmbeddingNoise, Perturbation
from unrolled.seeding import derive_seed, generator
from unrolled.tasks.text.tokenize import EncodedDataset, batches
from unrolled.train.checkpoint import atomic_write_text
from unrolled.train.compiled import trainer_compile_args
from unrolled.train.hf import ConstrainedTrainer

Method = HFEncoderMethod | UTTextMethod


def tokenizer_model(method: Method) -> str:
    """The model whose tokenizer (and, for the UT, embeddings) a method uses."""
    return method.model if isinstance(method, HFEncoderMethod) else method.embedding_model


def build(method: Method, num_labels: int, seed: int) -> nn.Module:
    """The solver of a method: an :class:`EncoderSolver` or a :class:`UTTextClassifier`."""
    torch.manual_seed(derive_seed(seed, method.name, "init"))  # any weights from_pretrained initialises
    gen = generator(seed, method.name, "init")
    if isinstance(method, HFEncoderMethod):
        kind = "classifier" if method.readout == "model" else "encoder"
        extra = {"num_labels": num_labels} if kind == "classifier" else {}
        model = load_model(method.model, kind, **extra)
        for m in model.modules():  # one dropout rate for the whole model (0: every readout is the same in
            if isinstance(m, nn.Dropout):  # training as at test, which is what the constraints measure)
                m.p = method.dropout
        return EncoderSolver(model, num_labels, method.readout, method.pooling, method.dropout, gen)
    tokenizer = tokenizer_of(method.embedding_model)
    pretrained = load_model(method.embedding_model, "encoder").get_input_embeddings()
    return UTTextClassifier(
        vocab_size=len(tokenizer),
        num_labels=num_labels,
        width=method.width,
        depth=method.depth,
        heads=method.heads,
        max_length=max(8, tokenizer.model_max_length if tokenizer.model_max_length < 10_000 else 512),
        embeddings=method.embeddings,
        pretrained=pretrained,
        activation=method.activation,
        dropout=method.dropout,
        init_std=method.init_std,
        pad_token_id=tokenizer.pad_token_id or 0,
        generator=gen,
    )


def train_solver(unit: Unit, solver: nn.Module, data: TextSeedData, ctx: UnitContext, sigma: float) -> Any:
    """Fine-tune ``solver`` with the Trainer (ERM or constrained); resumes from the last Trainer checkpoint."""
    cfg: TextExperiment = ctx.cfg  # type: ignore[assignment]
    method: Method = unit.spec
    out = ctx.checkpoint.with_suffix("")
    t = cfg.train
    args = TrainingArguments(
        output_dir=str(out), max_steps=t.steps, per_device_train_batch_size=t.batch_size,
        learning_rate=method.lr or t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.schedule, max_grad_norm=t.max_grad_norm, logging_steps=t.log_every,
        save_strategy="steps", save_steps=t.checkpoint_every, save_total_limit=1, report_to=t.report_to, **trainer_compile_args(t.compile),
        run_name=unit.key, use_cpu=not ctx.device.startswith("cuda"), seed=unit.seed, data_seed=unit.seed, disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0,
    )  # fmt: skip
    train_set = EncodedDataset(data.encoded(tokenizer_model(method), "train"), pad_token_id=_pad_id(method))
    p = cfg.perturbation
    noise = Perturbation(p.kind, p.train_gamma, p.mean, sigma) if p.train_gamma > 0 else None
    trainer = ConstrainedTrainer(
        model=solver, args=args, train_dataset=train_set, data_collator=train_set.collate,
        constraints=method.constraints or method.early_exit, train_noise=noise, noise_seed=derive_seed(unit.seed, "train-noise"),
    )  # fmt: skip
    resume = get_last_checkpoint(str(out)) if out.is_dir() else None
    trainer.remove_callback(
        PrinterCallback
    )  # the runner has its own progress bar; the logs go to metrics.jsonl
    trainer.add_callback(UnitProgress(ctx))
    result = trainer.train(resume_from_checkpoint=resume)
    return trainer, result


def _pad_id(method: Method) -> int:
    return tokenizer_of(tokenizer_model(method)).pad_token_id or 0


@torch.no_grad()
def evaluate(
    solver: nn.Module,
    encoded: dict[str, Tensor],
    noise: Perturbation,
    gammas: tuple[float, ...],
    seed: int,
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """Per test γ: accuracy of the last layer, loss and accuracy of every layer, share of ascending layers.

    The noise at each γ comes from its own seeded generator, so every method sees the same draws for the
    same batch shapes; γ = 0 is the clean model exactly.
    """
    solver.eval()
    out: dict[str, dict[str, Any]] = {}
    labels_all = encoded["labels"]
    for gamma in gammas:
        g = generator(seed, "test-noise", gamma)
        loss_sum: Tensor | None = None
        correct: Tensor | None = None
        with EmbeddingNoise(solver.get_input_embeddings(), noise.with_gamma(gamma), "test", g):
            for batch in batches(encoded, batch_size):
                labels = batch.pop("labels")
                traj = solver(**batch)
                logits = torch.stack([traj.readout(s) for s in traj.states])  # [L + 1, B, C]
                losses = torch.stack([solver.per_sample_loss(lg, labels) for lg in logits]).sum(dim=1)
                hits = (logits.argmax(dim=-1) == labels).sum(dim=1)
                loss_sum = losses if loss_sum is None else loss_sum + losses
                correct = hits if correct is None else correct + hits
        assert loss_sum is not None and correct is not None
        n = labels_all.shape[0]
        layer_loss = (loss_sum / n).double()
        out[str(gamma)] = {
            "accuracy": float(correct[-1]) / n,
            "layer_loss": [float(v) for v in layer_loss],
            "layer_accuracy": [float(v) / n for v in correct],
            "violation_share": violation_share(layer_loss),
        }
    return out


def save_solver(solver: nn.Module, method: Method, folder: Path, label_names: tuple[str, ...]) -> None:
    """Write the trained model beside its final place, then rename it in (no half-written folder)."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if isinstance(solver, EncoderSolver) and solver.readout_kind == "model":
        solver.model.config.id2label = dict(enumerate(label_names))
        solver.model.config.label2id = {n: i for i, n in enumerate(label_names)}
        solver.model.save_pretrained(tmp)
        tokenizer_of(tokenizer_model(method)).save_pretrained(tmp)
    else:
        torch.save(solver.state_dict(), tmp / "solver.pt")
        atomic_write_text(tmp / "method.json", json.dumps(method.model_dump(), indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def run_unit(unit: Unit, data: TextSeedData, ctx: UnitContext) -> dict[str, Any]:
    """Train one method for one seed, save it, and test it over the γ grid."""
    with quiet_transformers():  # no load report per unit (the classifier head is new by design), no bars
        return _run_unit(unit, data, ctx)


def _run_unit(unit: Unit, data: TextSeedData, ctx: UnitContext) -> dict[str, Any]:
    cfg: TextExperiment = ctx.cfg  # type: ignore[assignment]
    method: Method = unit.spec
    t0 = time.perf_counter()
    solver = build(method, data.num_labels, unit.seed)
    tok = tokenizer_model(method)
    sigma0 = embedding_sigma(solver, data.encoded(tok, "train"))
    t_train = time.perf_counter()
    trainer, result = train_solver(unit, solver, data, ctx, sigma0)
    train_seconds = time.perf_counter() - t_train
    solver = trainer.model
    sigma = embedding_sigma(solver, data.encoded(tok, "train"))  # the trained model's own embeddings
    p = cfg.perturbation
    record: dict[str, Any] = {
        "method": method.name,
        "seed": unit.seed,
        "depth": None,
        "layers": trainer.depth,
        "steps": int(result.global_step),
        "final_train_loss": result.training_loss if math.isfinite(result.training_loss) else None,
        "sigma": sigma,
        "parameters": sum(q.numel() for q in solver.parameters()),
        "trainable_parameters": sum(q.numel() for q in solver.parameters() if q.requires_grad),
        "data": data.sizes(),
        "eval": evaluate(
            solver,
            data.encoded(tok, "test"),
            Perturbation(p.kind, 0.0, p.mean, sigma),
            p.test_gammas,
            unit.seed,
            cfg.train.eval_batch_size,
        ),
    }
    if trainer.objective.constrained:
        record["multipliers"] = [float(v) for v in trainer.objective.multipliers.value]  # type: ignore[attr-defined]
    record["objective"] = objective_record(trainer.objective, trainer.depth)
    record["train_seconds"] = train_seconds
    if ctx.rank == 0:
        save_solver(
            solver,
            method,
            ctx.out / "models" / method.name / f"seed{unit.seed}",
            data.split.train.label_names,
        )
        shutil.rmtree(
            ctx.checkpoint.with_suffix(""), ignore_errors=True
        )  # the Trainer checkpoints: done with
        ctx.checkpoint.unlink(missing_ok=True)
    record["seconds"] = time.perf_counter() - t0
    return record
