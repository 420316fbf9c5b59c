"""encode / batches / EncodedDataset with the MiniLM tokenizer: padding, truncation, masks, segments."""

from __future__ import annotations

import torch

from unrolled.tasks.text import EncodedDataset, TextExamples, batches, encode

TEXTS = ("short", "a somewhat longer sentence with several more words in it", "mid length text here")
PAIRS = ("the second part", "tiny", "another hypothesis that is fairly long as well")


def _examples(pairs=None) -> TextExamples:
    return TextExamples(TEXTS, pairs, (0, 1, 0), ("a", "b"), "test")


def test_single_texts_padding_truncation_and_masks(tokenizer):
    enc = encode(_examples(), tokenizer, max_length=128)
    assert set(enc) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lengths = [len(tokenizer(t)["input_ids"]) for t in TEXTS]  # independent: one text at a time
    assert ids.shape == (3, max(lengths)) and ids.dtype == torch.long
    assert mask.sum(1).tolist() == lengths
    assert torch.equal(mask == 0, ids == tokenizer.pad_token_id)  # 0 exactly on padding
    for row, n in enumerate(lengths):
        assert ids[row, 0] == tokenizer.cls_token_id and ids[row, n - 1] == tokenizer.sep_token_id
        assert torch.all(mask[row, :n] == 1) and torch.all(mask[row, n:] == 0)
    assert torch.all(enc["token_type_ids"] == 0)
    assert enc["labels"].tolist() == [0, 1, 0]

    short = encode(_examples(), tokenizer, max_length=6)
    assert short["input_ids"].shape == (3, 6)
    assert short["attention_mask"].sum(1).tolist() == [min(n, 6) for n in lengths]
    assert short["input_ids"][1, -1] == tokenizer.sep_token_id  # truncated, still closed by [SEP]
    assert torch.equal(short["input_ids"][1, :5], enc["input_ids"][1, :5])


def test_pairs_have_both_segments(tokenizer):
    enc = encode(_examples(PAIRS), tokenizer, max_length=128)
    types, mask, ids = enc["token_type_ids"], enc["attention_mask"], enc["input_ids"]
    for row, (a, b) in enumerate(zip(TEXTS, PAIRS, strict=True)):
        n_a = len(tokenizer(a)["input_ids"])  # [CLS] a [SEP]
        n_b = len(tokenizer(b)["input_ids"]) - 1  # b [SEP]
        assert int(mask[row].sum()) == n_a + n_b
        assert torch.all(types[row, :n_a] == 0) and torch.all(types[row, n_a : n_a + n_b] == 1)
        assert torch.all(types[row, n_a + n_b :] == 0)  # padding
        assert (ids[row, : n_a + n_b] == tokenizer.sep_token_id).sum() == 2
    cut = encode(_examples(PAIRS), tokenizer, max_length=10)
    assert cut["input_ids"].shape[1] == 10
    for row in range(3):
        kept = cut["token_type_ids"][row][cut["attention_mask"][row].bool()]
        assert (kept == 0).any() and (kept == 1).any()  # longest-first keeps both segments


def test_batches_pad_per_batch_and_cover_everything(tokenizer):
    enc = encode(_examples(PAIRS), tokenizer, max_length=128)
    ordered = list(batches(enc, batch_size=2))
    assert [b["labels"].tolist() for b in ordered] == [[0, 1], [0]]
    last = ordered[1]
    assert last["input_ids"].shape[1] == int(enc["attention_mask"][2].sum())  # trimmed to its own length
    assert torch.all(last["attention_mask"] == 1)
    shuffled = list(batches(enc, batch_size=2, generator=torch.Generator().manual_seed(0)))
    rows = torch.cat([b["labels"] for b in shuffled])
    assert sorted(rows.tolist()) == [0, 0, 1]
    assert len(list(batches(enc, batch_size=2, drop_last=True))) == 1


def test_encoded_dataset_collate_and_trainer_collator(tokenizer):
    from transformers import DataCollatorWithPadding

    enc = encode(_examples(PAIRS), tokenizer, max_length=128)
    dataset = EncodedDataset(enc, pad_token_id=tokenizer.pad_token_id)
    assert len(dataset) == 3
    item = dataset[0]
    assert item["input_ids"].ndim == 1 and item["labels"].ndim == 0
    assert len(item["input_ids"]) == int(enc["attention_mask"][0].sum())
    ours = dataset.collate([dataset[i] for i in range(3)])
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert torch.equal(ours[key], enc[key]), key
    theirs = DataCollatorWithPadding(tokenizer)([dataset[i] for i in range(3)])
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert torch.equal(theirs[key], enc[key]), key
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=dataset.collate)
    assert [b["input_ids"].shape[0] for b in loader] == [2, 1]


def test_empty_set(tokenizer):
    enc = encode(TextExamples((), None, (), ("a", "b"), "empty"), tokenizer, 16)
    assert enc["input_ids"].shape == (0, 0) and enc["labels"].shape == (0,)
    assert list(batches(enc, 4)) == []
