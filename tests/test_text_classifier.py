"""The UT text classifier: padding never matters, frozen pretrained embeddings stay frozen."""

import pytest
import torch

from unrolled.models.text_classifier import UTTextClassifier


def _batch():
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]])
    return ids, (ids != 0).long()


@pytest.mark.parametrize("embeddings", ["scratch", "pretrained"])
def test_padding_changes_no_state_or_prediction(embeddings):
    table = torch.nn.Embedding(50, 24)
    model = UTTextClassifier(
        50, 3, width=16, depth=3, heads=2, max_length=16, embeddings=embeddings, pretrained=table,
        generator=torch.Generator().manual_seed(0),
    ).eval()  # fmt: skip
    ids, mask = _batch()
    longer_ids = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, b = model(ids, mask), model(longer_ids, longer_mask)
    assert a.depth == 3
    for l in range(4):
        torch.testing.assert_close(a.prediction(l), b.prediction(l), rtol=1e-5, atol=1e-6)
        real = mask.bool()
        torch.testing.assert_close(a.states[l][real], b.states[l][:, :6][real], rtol=1e-5, atol=1e-6)


def test_pretrained_embeddings_are_copied_and_frozen():
    table = torch.nn.Embedding(50, 24)
    model = UTTextClassifier(50, 2, width=16, depth=2, heads=2, embeddings="pretrained", pretrained=table)
    assert torch.equal(model.get_input_embeddings().weight, table.weight)
    assert not model.get_input_embeddings().weight.requires_grad
    ids, mask = _batch()
    loss = model.per_sample_loss(model(ids, mask).prediction(), torch.tensor([0, 1])).mean()
    loss.backward()
    assert model.get_input_embeddings().weight.grad is None and model.project.weight.grad is not None
    with pytest.raises(ValueError, match="at most 512"):
        model(torch.zeros(1, 600, dtype=torch.long))
