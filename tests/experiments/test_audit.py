"""`unrolled audit`: layerwise losses of saved tiny models equal a direct computation; clear errors."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unrolled.cli import main  # noqa: E402
from unrolled.tasks.text import minilm_path  # noqa: E402

SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64)


def _tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path())


def test_audit_of_a_causal_lm_matches_the_models_own_loss(tmp_path, capsys):
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=2, num_key_value_heads=2, vocab_size=len(tok), **SMALL)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    texts = tmp_path / "docs.txt"
    texts.write_text("the first document is here.\n\nand a second, longer one about space and stars.\n")
    out = tmp_path / "audit"
    assert (
        main(["audit", str(tmp_path / "lm"), "--data", str(texts), "--out", str(out), "--max-length", "32"])
        == 0
    )
    assert "layer 2" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "causal_lm" and results["layers"] == 2
    # independent: the model's own loss (Hugging Face's token mean) over the same two texts, one at a time
    nll, count = 0.0, 0
    for doc in ("the first document is here.", "and a second, longer one about space and stars."):
        ids = tok(doc, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            nll += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    assert results["tokens"] == count
    assert results["layer_loss_mean"][-1] == pytest.approx(nll / count, rel=1e-4)
    assert (out / "loss_vs_layer.png").exists() and "logit lens" in (out / "report.md").read_text()


def test_audit_of_a_classifier_reads_its_head_at_every_layer(tmp_path):
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = transformers.BertConfig(num_hidden_layers=2, vocab_size=len(tok), num_labels=2, **SMALL)
    cfg.id2label, cfg.label2id = {0: "alt.atheism", 1: "sci.space"}, {"alt.atheism": 0, "sci.space": 1}
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "cls")
    tok.save_pretrained(tmp_path / "cls")
    out = tmp_path / "audit"
    assert (
        main(
            ["audit", str(tmp_path / "cls"), "--data", "newsgroups", "--out", str(out), "--max-length", "16"]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert (
        results["kind"] == "classifier" and results["examples"] == 40 and len(results["layer_loss_mean"]) == 3
    )
    assert all(0 <= a <= 1 for a in results["layer_accuracy_mean"])


def test_audit_errors_name_the_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["audit", "nobody/no-model", "--data", "newsgroups", "--out", str(tmp_path / "a")]) == 2
    assert "model 'nobody/no-model'" in capsys.readouterr().err
    assert main(["audit", "minilm", "--data", "newsgroups", "--out", str(tmp_path / "b")]) == 2
    assert "no head to read its layers" in capsys.readouterr().err
    assert main(["models"]) == 0
    assert "minilm" in capsys.readouterr().out


def test_a_bad_text_file_is_named_with_its_line(tmp_path, capsys):
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(tok), **SMALL)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    bad = tmp_path / "texts.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    assert main(["audit", str(tmp_path / "lm"), "--data", str(bad), "--out", str(tmp_path / "a")]) == 2
    assert "texts.jsonl, line 2: not valid JSON" in capsys.readouterr().err
