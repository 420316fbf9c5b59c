"""The descent audit of a pretrained model: every layer read out by the model's own head, no training.

A sequence classifier's head reads every layer's hidden states (:class:`~unrolled.models.hf.EncoderSolver`,
``readout="model"``): cross-entropy and accuracy per layer on labelled texts. A causal LM's final norm and LM
head read every layer (the logit lens, :class:`~unrolled.models.hf.LanguageModelSolver`): next-token
cross-entropy and accuracy per layer, computed chunk by chunk, so no ``[B, T, V]`` logits of a whole batch,
and never ``[L, B, T, V]``, are held.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unrolled.constrained.descent import violation_share
from unrolled.experiments.audit.config import AuditExperiment, AuditTask
from unrolled.experiments.family import Unit, UnitContext
from unrolled.experiments.hf_progress import quiet_transformers
from unrolled.models.hf import EncoderSolver, LanguageModelSolver, load_model, load_tokenizer, resolve_model
from unrolled.models.readouts import IGNORE_INDEX
from unrolled.tasks.text import (
    TextDataConfig,
    chatterbot_pairs,
    chatterbot_topics,
    load_text_data,
    newsgroups,
)
from unrolled.tasks.text.files import TextDataError


def model_kind(model: str) -> str:
    """``classifier`` (a ``*ForSequenceClassification``) or ``causal_lm`` (a ``*ForCausalLM``), from its config."""
    from transformers import AutoConfig

    from unrolled.models.hf import _not_found

    ref = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(ref)
    except OSError as exc:
        raise _not_found(model, exc) from None
    for arch in config.architectures or []:
        if arch.endswith("ForSequenceClassification"):
            return "classifier"
        if arch.endswith("ForCausalLM"):
            return "causal_lm"
    raise ValueError(
        f"model {model!r} ({', '.join(config.architectures or ['no architectures'])}) has no head to read its layers "
        "with: the audit takes a sequence classifier or a causal LM"
    )


def _file_texts(path: Path, column: str) -> list[str]:
    """Texts of a local file: ``.txt`` documents separated by blank lines, or ``column`` of a JSON lines file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise TextDataError(path, f"not UTF-8 at byte {exc.start}") from None
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        docs = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TextDataError(path, f"not valid JSON ({exc.msg})", f"line {i}") from None
            if not isinstance(record, dict) or not isinstance(record.get(column), str):
                raise TextDataError(path, "no text there", f"line {i}", column)
            docs.append(record[column])
    else:
        raise TextDataError(path, "a language-model audit reads .txt or .jsonl files")
    if not docs:
        raise TextDataError(path, "holds no text")
    return docs


def lm_texts(task: AuditTask, tokenizer: Any) -> list[str]:
    """The texts of a language-model audit (chat pairs rendered with the model's chat template)."""
    if task.data == "chatterbot_pairs":
        pairs = chatterbot_pairs()
        if task.chat_template and getattr(tokenizer, "chat_template", None):
            return [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p.user}, {"role": "assistant", "content": p.assistant}],
                    tokenize=False,
                )
                for p in pairs
            ]
        return [f"{p.user}\n{p.assistant}" for p in pairs]
    if task.data == "newsgroups":
        return list(newsgroups().texts)
    if task.data == "chatterbot":
        return list(chatterbot_topics().texts)
    return _file_texts(Path(task.data), task.text_column)


def lm_batches(task: AuditTask, tokenizer: Any, seed: int) -> list[dict[str, Tensor]]:
    """``max_examples`` texts (seeded sample), tokenised in batches; labels are the tokens, padding ignored."""
    texts = lm_texts(task, tokenizer)
    random.Random(seed).shuffle(texts)
    texts = texts[: task.max_examples]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    for start in range(0, len(texts), task.batch_size):
        enc = tokenizer(
            texts[start : start + task.batch_size],
            padding="longest",
            truncation=True,
            max_length=task.max_length,
            return_tensors="pt",
            add_special_tokens=task.data != "chatterbot_pairs",  # the chat template has its own
        )
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = IGNORE_INDEX
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    return out


def classifier_batches(
    task: AuditTask, model: Any, tokenizer: Any, seed: int
) -> tuple[list[dict[str, Tensor]], list[str]]:
    """Labelled texts of a classifier audit, with labels mapped onto the model's classes by name."""
    from unrolled.tasks.text import encode
    from unrolled.tasks.text.tokenize import batches

    cfg = TextDataConfig(
        source=task.data, text_column=task.text_column, label_column=task.label_column,
        hub_config=task.hub_config, max_length=task.max_length,
    )  # fmt: skip
    split = load_text_data(cfg, seed)
    examples = split.sides()[task.split] if task.split in ("train", "validation", "test") else split.test
    names = list(examples.label_names)
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(model_names) == sorted(names):
        remap = torch.tensor([model_names.index(n) for n in names])
    elif all(n.startswith("LABEL_") for n in model_names) and len(model_names) == len(names):
        remap = torch.arange(len(names))  # an unnamed head: classes in the data's order
    else:
        raise ValueError(f"the model's labels {model_names} are not the data's labels {names}")
    encoded = encode(examples, tokenizer, task.max_length)
    encoded["labels"] = remap[encoded["labels"]]
    n = min(task.max_examples, int(encoded["labels"].shape[0]))
    encoded = {k: v[:n] for k, v in encoded.items()}
    return list(batches(encoded, task.batch_size)), model_names


@torch.no_grad()
def run_unit(unit: Unit, data: Any, ctx: UnitContext) -> dict[str, Any]:
    """Read every layer of the model out on the audit's texts."""
    cfg: AuditExperiment = ctx.cfg  # type: ignore[assignment]
    task = cfg.task
    t0 = time.perf_counter()
    kind = model_kind(task.model)
    with quiet_transformers():
        tokenizer = load_tokenizer(task.model)
        model = load_model(task.model, "classifier" if kind == "classifier" else "causal_lm")
    model = model.to(ctx.device).eval()
    loss_sum: list[float] = []
    correct: list[float] = []
    count = 0
    record: dict[str, Any] = {
        "method": "audit",
        "seed": unit.seed,
        "depth": None,
        "model": task.model,
        "kind": kind,
    }
    if kind == "classifier":
        batches, names = classifier_batches(task, model, tokenizer, unit.seed)
        record["labels"] = names
        solver: Any = EncoderSolver(model, readout="model")
        for batch in batches:
            labels = batch.pop("labels").to(ctx.device)
            traj = solver(**{k: v.to(ctx.device) for k, v in batch.items()})
            logits = torch.stack([traj.readout(s) for s in traj.states])  # [L + 1, B, C]
            ce = torch.stack([solver.per_sample_loss(lg, labels).sum() for lg in logits])
            hits = (logits.argmax(dim=-1) == labels).sum(dim=1)
            loss_sum = [a + float(b) for a, b in zip(loss_sum or [0.0] * len(ce), ce, strict=True)]
            correct = [a + float(b) for a, b in zip(correct or [0.0] * len(hits), hits, strict=True)]
            count += int(labels.shape[0])
            ctx.advance(1)
        record["examples"] = count
    else:
        solver = LanguageModelSolver(model, chunk_tokens=task.chunk_tokens)
        for batch in lm_batches(task, tokenizer, unit.seed):
            labels = batch.pop("labels").to(ctx.device)
            traj = solver(**{k: v.to(ctx.device) for k, v in batch.items()})
            per_layer = [solver.lens.evaluate(s, labels) for s in traj.states]
            loss_sum = [a + b[0] for a, b in zip(loss_sum or [0.0] * len(per_layer), per_layer, strict=True)]
            correct = [a + b[1] for a, b in zip(correct or [0.0] * len(per_layer), per_layer, strict=True)]
            count += per_layer[0][2]
            ctx.advance(1)
        record["tokens"] = count
    layer_loss = torch.tensor(loss_sum, dtype=torch.float64) / max(count, 1)
    record.update(
        layers=len(loss_sum) - 1,
        layer_loss=layer_loss.tolist(),
        layer_accuracy=[c / max(count, 1) for c in correct],
        violation_share=violation_share(layer_loss),
        seconds=time.perf_counter() - t0,
    )
    return record
