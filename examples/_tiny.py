"""What the examples' ``--quick`` modes share: tiny Hugging Face models built in-process (nothing downloaded)
with a word-level tokenizer over the example's own texts, and the figure folder."""

from pathlib import Path

import torch


def word_tokenizer(texts: list[str], specials: dict[str, str]):
    """A word-level tokenizer over ``texts`` (special tokens first: ``{"pad_token": "<pad>", ...}``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.split()})
    vocab = {tok: i for i, tok in enumerate(specials.values())}
    vocab.update({w: i + len(vocab) for i, w in enumerate(w for w in words if w not in vocab)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token=specials["unk_token"]))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, **specials)


def tiny_llama(texts: list[str]):
    """A 3-layer Llama (hidden 32) and its tokenizer over ``texts``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = word_tokenizer(texts, {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"})
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1)  # fmt: skip
    return LlamaForCausalLM(config), tokenizer


def tiny_bert_classifier(texts: list[str], num_labels: int):
    """A 3-layer BERT sequence classifier (hidden 32) and its tokenizer over ``texts``."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = word_tokenizer(texts, {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]"})
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                        vocab_size=len(tokenizer), num_labels=num_labels)  # fmt: skip
    return BertForSequenceClassification(config), tokenizer


def save_figure(fig, folder: str, name: str) -> None:
    """Write ``fig`` to ``folder/name`` and say where."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / name, dpi=120, bbox_inches="tight")
    print(f"wrote {out / name}")
