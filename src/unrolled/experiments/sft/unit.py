"""One SFT unit: fine-tune the base model with ``ConstrainedSFTTrainer``, test it over the γ grid, generate.

Training runs in ``checkpoints/<method>/seed<s>/`` (Trainer checkpoints with the multipliers; an interrupted
unit resumes from the last one). The trained model (the LoRA adapter, or the full model) and its tokenizer
go to ``models/<method>/seed<s>/`` (``from_pretrained`` / ``PeftModel.from_pretrained`` load it), the
responses to the win-rate prompts to ``generations/<method>/seed<s>.json``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint

from unrolled.eval.generation import generate_responses
from unrolled.experiments.family import Unit, UnitContext
from unrolled.experiments.hf_progress import UnitProgress
from unrolled.experiments.objectives import objective_record
from unrolled.experiments.sft.config import SFTExperiment, SFTMethod
from unrolled.experiments.sft.data import SFTSeedData
from unrolled.experiments.sft.evaluate import evaluate_tokens
from unrolled.models.hf import load_model
from unrolled.perturb import Perturbation
from unrolled.seeding import derive_seed, generator
from unrolled.train.checkpoint import atomic_write_text
from unrolled.train.compiled import trainer_compile_args
from unrolled.train.sft import ConstrainedSFTConfig, ConstrainedSFTTrainer

__all__ = ["build_trainer", "generations_path", "model_folder", "run_train_unit"]


def model_folder(out: Path, method: str, seed: int) -> Path:
    return out / "models" / method / f"seed{seed}"


def generations_path(out: Path, method: str, seed: int) -> Path:
    return out / "generations" / method / f"seed{seed}.json"


def _objective_fields(method: SFTMethod) -> dict[str, Any]:
    """The ``ConstrainedSFTConfig`` fields of a method's layerwise objective."""
    fields: dict[str, Any] = {"readout_token_fraction": method.readout_token_fraction}
    if method.early_exit is not None:
        e = method.early_exit
        return {
            **fields,
            "layer_objective": "early_exit",
            "early_exit_scale": e.scale,
            "early_exit_scale_type": e.scale_type,
            "early_exit_curriculum": e.curriculum,
            "early_exit_gradual_fraction": e.gradual_fraction,
            "early_exit_layers": list(e.layers) if e.layers is not None else None,
        }
    c = method.constraints
    if c is None:
        return {**fields, "layer_objective": "none"}
    if c.dual_source != "train":
        raise ValueError(
            f"methods.{method.name}.constraints.dual_source: SFT takes dual steps on training batches only"
        )
    return {
        **fields,
        "layer_objective": "constrained",
        "constraint_alpha": c.alpha,
        "constraint_alphas": list(c.alphas) if c.alphas is not None else None,
        "constrained_layers": list(c.layers) if c.layers is not None else None,
        "dual_lr": c.dual_lr,
        "dual_every": c.dual_every,
        "resilient_cost": c.resilient_cost,
        "multiplier_max": c.multiplier_max,
        "calibrate": c.calibrate.mode if c.calibrate is not None else None,
        "calibration_batches": c.calibrate.batches if c.calibrate is not None else 4,
        "calibration_margin": c.calibrate.margin if c.calibrate is not None else 0.0,
        "infeasibility_window": c.infeasibility_window,
        "relative_slack": c.relative,
        "detach_previous": c.detach_previous,
    }


def build_trainer(
    cfg: SFTExperiment, method: SFTMethod, data: SFTSeedData, out_dir: Path, seed: int, device: str
) -> ConstrainedSFTTrainer:
    """The trainer of one method: the base model (LoRA adapters through PEFT, or all weights), TRL's data
    handling (chat template, completion-only loss), the constraints and the train-time embedding noise."""
    t, p = cfg.train, cfg.perturbation
    torch.manual_seed(derive_seed(seed, method.name, "init"))  # LoRA's random init
    dtype = torch.bfloat16 if t.bf16 else torch.float32
    model = load_model(cfg.task.model, "causal_lm", dtype=dtype)
    tokenizer = data.tokenizer
    args = ConstrainedSFTConfig(
        output_dir=str(out_dir), max_steps=t.steps, per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation, per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=method.lr or t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.schedule, max_grad_norm=t.max_grad_norm, logging_steps=t.log_every,
        save_strategy="steps", save_steps=t.checkpoint_every, save_total_limit=1, report_to=t.report_to, **trainer_compile_args(t.compile),
        run_name=f"{method.name}/seed{seed}", use_cpu=not device.startswith("cuda"), seed=seed, data_seed=seed, disable_tqdm=True, bf16=t.bf16,
        gradient_checkpointing=None, activation_checkpointing=t.gradient_checkpointing, max_length=cfg.task.max_length,
        completion_only_loss=True, dataloader_num_workers=0, dataset_num_proc=None,
        readout_chunk_tokens=t.readout_chunk_tokens,
        embedding_noise=p.kind if p.train_gamma > 0 else None, embedding_noise_gamma=p.train_gamma,
        embedding_noise_sigma=data.sigma if p.kind == "gaussian" else None,
        **_objective_fields(method),
    )  # fmt: skip
    peft_config = None
    if t.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
            target_modules=list(t.lora.target_modules), task_type="CAUSAL_LM",
        )  # fmt: skip
    return ConstrainedSFTTrainer(
        model=model, args=args, train_dataset=data.train_dataset, eval_dataset=data.eval_dataset,
        processing_class=tokenizer, peft_config=peft_config,
    )  # fmt: skip


def _save_model(trainer: ConstrainedSFTTrainer, folder: Path) -> None:
    """The adapter (LoRA) or the full model, and the tokenizer, renamed into place when complete."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def run_train_unit(unit: Unit, data: SFTSeedData, ctx: UnitContext) -> dict[str, Any]:
    """Train one method for one seed, save it, test it at every γ, and answer the win-rate prompts."""
    cfg: SFTExperiment = ctx.cfg  # type: ignore[assignment]
    method: SFTMethod = unit.spec
    t0 = time.perf_counter()
    out_dir = ctx.checkpoint.with_suffix("")
    trainer = build_trainer(cfg, method, data, out_dir, unit.seed, ctx.device)
    trainer.remove_callback(PrinterCallback)  # the runner has its own progress bar; logs go to metrics.jsonl
    trainer.add_callback(UnitProgress(ctx))
    steps, final_loss = 0, None
    if method.finetune:
        resume = get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None
        result = trainer.train(resume_from_checkpoint=resume)
        steps = int(result.global_step)
        final_loss = result.training_loss if math.isfinite(result.training_loss) else None
    train_seconds = time.perf_counter() - t0
    p = cfg.perturbation
    noise = Perturbation(p.kind, 0.0, p.mean, data.sigma if p.kind == "gaussian" else None)
    layer_gammas = tuple(g for g in p.test_gammas if p.reads_layers_at(g))
    record: dict[str, Any] = {
        "method": method.name,
        "seed": unit.seed,
        "depth": None,
        "layers": trainer.depth,
        "steps": steps,
        "final_train_loss": final_loss,
        "train_seconds": train_seconds,
        "sigma": data.sigma,
        "parameters": sum(q.numel() for q in trainer.model.parameters()),
        "trainable_parameters": sum(q.numel() for q in trainer.model.parameters() if q.requires_grad),
        "data": data.sizes(),
        "truncated": data.truncation,
        "eval": evaluate_tokens(trainer, noise, p.test_gammas, unit.seed, layer_gammas),
    }
    if trainer.objective.constrained:
        record["multipliers"] = [float(v) for v in trainer.objective.multipliers.value]  # type: ignore[attr-defined]
    record["objective"] = objective_record(trainer.objective, trainer.depth)
    if cfg.winrate is not None:
        record["generation"] = _generate(cfg, trainer, data, noise, unit, ctx)
    if ctx.rank == 0 and method.finetune:
        _save_model(trainer, model_folder(ctx.out, method.name, unit.seed))
        shutil.rmtree(out_dir, ignore_errors=True)  # the Trainer checkpoints: done with
        ctx.checkpoint.unlink(missing_ok=True)
    record["seconds"] = time.perf_counter() - t0
    return record


def _generate(
    cfg: SFTExperiment,
    trainer: ConstrainedSFTTrainer,
    data: SFTSeedData,
    noise: Perturbation,
    unit: Unit,
    ctx: UnitContext,
) -> dict[str, Any]:
    """Greedy responses to the win-rate prompts at each win-rate γ, written to ``generations/``."""
    assert cfg.winrate is not None
    w = cfg.winrate
    prompts = [list(ex.prompt) for ex in data.split.winrate]
    saved: dict[str, Any] = {"method": unit.method, "seed": unit.seed, "gammas": {}}
    stats: dict[str, Any] = {}
    for gamma in w.gammas:
        g = generator(unit.seed, "sft-generation-noise", gamma)
        gen = generate_responses(
            trainer.model, data.tokenizer, prompts, max_new_tokens=w.max_new_tokens,
            batch_size=w.batch_size, noise=noise.with_gamma(gamma), generator=g,
        )  # fmt: skip
        saved["gammas"][str(gamma)] = gen.texts
        stats[str(gamma)] = gen.summary()
    if ctx.rank == 0:
        path = generations_path(ctx.out, unit.method, unit.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(saved, indent=1, ensure_ascii=False) + "\n")
    return stats
