"""Eval token accuracy and the logit-lens loss of every layer, at each test noise level.

The batches are the trainer's own eval batches (TRL's collator: its completion masks and padding), and the
accuracy is TRL's ``mean_token_accuracy``: the share of trained next tokens that the last layer's argmax
predicts, over all of them. The loss of layer l is the token cross-entropy of the logit lens (final norm and
LM head) on the state after layer l, l = 0..L, on the same tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unrolled.constrained.descent import violation_share
from unrolled.models.hf import logit_lens
from unrolled.perturb import EmbeddingNoise, Perturbation
from unrolled.seeding import generator
from unrolled.train.sft import _language_model

__all__ = ["evaluate_tokens"]


@torch.no_grad()
def evaluate_tokens(
    trainer: Any,
    noise: Perturbation,
    gammas: tuple[float, ...],
    seed: int,
    layer_gammas: tuple[float, ...] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per test γ: ``token_accuracy``, ``loss`` (the last layer's) and the number of ``tokens`` scored; at the
    γ in ``layer_gammas`` (default: all) also ``layer_loss`` and ``layer_token_accuracy`` ``[L + 1]`` (the
    logit lens after layer l, l = 0..L: what exiting outright there scores) and ``violation_share``.

    The eval set is the trainer's own (TRL has tokenised it with the chat template and built its masks). The
    noise at each γ comes from its own seeded generator, so every method sees the same draws.
    """
    model = trainer.model
    model.eval()
    lm = _language_model(model)
    lens = logit_lens(lm, trainer.args.readout_chunk_tokens)
    loader = trainer.get_eval_dataloader()  # TRL's processed eval set and collator
    out: dict[str, dict[str, Any]] = {}
    for gamma in gammas:
        g = generator(seed, "sft-test-noise", gamma)
        layers = layer_gammas is None or gamma in layer_gammas
        sums: Tensor | None = None
        correct = total = 0
        with EmbeddingNoise(model.get_input_embeddings(), noise.with_gamma(gamma), "test", g):
            for batch in loader:
                batch = trainer._prepare_inputs(batch)
                labels = batch["labels"]
                logits, states = trainer.forward_with_states(model, batch, states=layers)
                shift_labels = labels[:, 1:]
                mask = shift_labels != -100
                n = int(mask.sum())
                if n == 0:
                    continue
                pred = logits[:, :-1].argmax(dim=-1)
                correct += int(((pred == shift_labels) & mask).sum())
                total += n
                # f_0..f_{L-1} by the logit lens; f_L from the model's own logits (the lens on the last layer)
                last = F.cross_entropy(logits[:, :-1][mask].float(), shift_labels[mask], reduction="sum")
                lens_out = [lens.evaluate(s, labels) for s in states]  # (loss sum, correct, tokens) each
                per_layer = torch.tensor(
                    [[loss_sum, hits] for loss_sum, hits, _ in lens_out]
                    + [[float(last), float(((pred == shift_labels) & mask).sum())]],
                    dtype=torch.float64,
                )
                sums = per_layer if sums is None else sums + per_layer
        assert sums is not None and total > 0, "no trained token in the eval set"
        layer_loss, layer_accuracy = (sums / total).unbind(dim=1)
        out[str(gamma)] = {"token_accuracy": correct / total, "loss": float(layer_loss[-1]), "tokens": total}
        if layers:
            out[str(gamma)]["layer_loss"] = [float(v) for v in layer_loss]
            # the token accuracy of exiting outright after layer l (the lens's argmax), l = 0..L
            out[str(gamma)]["layer_token_accuracy"] = [float(v) for v in layer_accuracy]
            out[str(gamma)]["violation_share"] = violation_share(layer_loss)
    return out
