"""Hugging Face models as solvers, checked against the models themselves (tiny models built in-process)."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from unrolled.models.hf import EncoderSolver, LanguageModelSolver, load_model  # noqa: E402
from unrolled.models.hub import ModelNotFoundError, minilm_path  # noqa: E402
from unrolled.models.readouts import IGNORE_INDEX  # noqa: E402
from unrolled.perturb import EmbeddingNoise, Perturbation  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=101)


def tiny_bert_classifier(num_labels: int = 3):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=3, num_labels=num_labels, **SMALL)
    return transformers.BertForSequenceClassification(cfg).eval()


def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=3, num_key_value_heads=2, **SMALL)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_bert_mlm():
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(transformers.BertConfig(num_hidden_layers=2, **SMALL)).eval()


def batch(b: int = 3, t: int = 9, pad_from: tuple[int, ...] = (9, 6, 4)):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    for i, start in enumerate(pad_from):
        ids[i, start:] = 0
        mask[i, start:] = 0
    return ids, mask


def test_encoder_states_are_the_hidden_states_and_its_own_head_gives_the_models_logits():
    model = tiny_bert_classifier()
    ids, mask = batch()
    solver = EncoderSolver(model, readout="model")
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        traj = solver(input_ids=ids, attention_mask=mask)
    assert traj.depth == 3
    for ours, theirs in zip(traj.states, ref.hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(traj.prediction(), ref.logits)


@pytest.mark.parametrize("kind", ["distilbert", "roberta"])
def test_other_encoders_own_heads_reproduce_their_logits(kind):
    torch.manual_seed(0)
    if kind == "distilbert":
        cfg = transformers.DistilBertConfig(
            dim=32, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=101, num_labels=2
        )
        model = transformers.DistilBertForSequenceClassification(cfg).eval()
    else:
        cfg = transformers.RobertaConfig(num_hidden_layers=2, num_labels=2, pad_token_id=1, **SMALL)
        model = transformers.RobertaForSequenceClassification(cfg).eval()
    ids, mask = batch()
    ids[ids == 0] = model.config.pad_token_id
    with torch.no_grad():
        traj = EncoderSolver(model, readout="model")(input_ids=ids, attention_mask=mask)
        torch.testing.assert_close(traj.prediction(), model(input_ids=ids, attention_mask=mask).logits)


def test_padding_changes_no_state_loss_or_prediction():
    model = tiny_bert_classifier()
    solver = EncoderSolver(transformers.BertModel(model.config).eval(), num_labels=3, readout="linear")
    ids, mask = batch()
    labels = torch.tensor([0, 2, 1])
    padded_ids = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = solver(input_ids=ids, attention_mask=mask)
        b = solver(input_ids=padded_ids, attention_mask=padded_mask)
        la = a.layerwise_losses(labels, solver.per_sample_loss, reduction="none")
        lb = b.layerwise_losses(labels, solver.per_sample_loss, reduction="none")
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    for l in range(a.depth + 1):
        torch.testing.assert_close(a.prediction(l), b.prediction(l), rtol=1e-5, atol=1e-6)


def test_lm_states_and_logit_lens_match_the_causal_model():
    model = tiny_llama()
    ids, mask = batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        traj = LanguageModelSolver(model)(input_ids=ids, attention_mask=mask)
    L = model.config.num_hidden_layers
    assert traj.depth == L
    for l in range(L):  # HF's last hidden state is after the final norm; ours is the layer's output
        torch.testing.assert_close(traj.states[l], ref.hidden_states[l])
    torch.testing.assert_close(model.model.norm(traj.states[L]), ref.hidden_states[L])
    torch.testing.assert_close(traj.prediction(), ref.logits)


def _naive(model, traj, labels, shift):
    """Every layer's logits materialised at once, then Hugging Face's token-mean cross-entropy."""
    logits = torch.stack([traj.readout(s) for s in traj.states])  # [L + 1, B, T, V]
    if shift:
        logits, labels = logits[:, :, :-1], labels[:, 1:]
    return torch.stack(
        [
            F.cross_entropy(
                lg.reshape(-1, lg.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX
            )
            for lg in logits
        ]
    )


@pytest.mark.parametrize("chunk", [1, 4, 1024])
@pytest.mark.parametrize("which", ["llama", "bert_mlm"])
def test_chunked_logit_lens_loss_equals_the_naive_one_with_gradients(which, chunk):
    model = tiny_llama() if which == "llama" else tiny_bert_mlm()
    ids, mask = batch()
    labels = ids.clone()
    labels[mask == 0] = IGNORE_INDEX
    labels[0, 2] = IGNORE_INDEX  # a prompt token that is not trained on
    solver = LanguageModelSolver(model, chunk_tokens=chunk)
    grads = []
    for fused in (True, False):
        model.zero_grad()
        traj = solver(input_ids=ids, attention_mask=mask)
        losses = traj.layerwise_losses(labels) if fused else _naive(model, traj, labels, which == "llama")
        losses.sum().backward()
        grads.append((losses.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (fused, g_fused), (naive, g_naive) = grads
    torch.testing.assert_close(fused, naive, rtol=1e-5, atol=1e-6)
    assert len(g_fused) == len(g_naive) > 0
    for a, b in zip(g_fused, g_naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_zero_noise_is_the_clean_metric_and_the_hook_is_gone_after_use():
    model = tiny_bert_classifier()
    solver = EncoderSolver(model, readout="model")
    ids, mask = batch()
    embeddings = solver.get_input_embeddings()
    with torch.no_grad():
        clean = solver(input_ids=ids, attention_mask=mask).prediction()
        with EmbeddingNoise(embeddings, Perturbation("gaussian", 0.0, sigma=1.0), "both", torch.Generator()):
            same = solver(input_ids=ids, attention_mask=mask).prediction()
        assert not embeddings._forward_hooks
        with EmbeddingNoise(
            embeddings, Perturbation("uniform", 5.0), "both", torch.Generator().manual_seed(0)
        ):
            noisy = solver(input_ids=ids, attention_mask=mask).prediction()
        assert not embeddings._forward_hooks
    assert torch.equal(clean, same)
    assert not torch.allclose(clean, noisy)


def test_an_unavailable_model_is_named_with_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(
        ModelNotFoundError, match=r"model 'nobody/no-such-model'.*save_pretrained.*HF_HUB_OFFLINE"
    ):
        load_model("nobody/no-such-model")
    assert time.perf_counter() - start < 30  # no hang on the hub


def test_the_minilm_carrier_loads_offline():
    model = load_model("minilm")
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert (minilm_path() / "tokenizer.json").is_file()
