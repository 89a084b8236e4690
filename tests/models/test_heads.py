"""tartan.models.heads: the research's classification head (first token, dropout, dense, tanh,
dropout, out_proj), computed by hand, and its save/load as safetensors plus JSON."""
from __future__ import annotations

import json

import torch

from tartan.models.heads import ClassificationHead, load_head_meta, load_head_weights, save_head


def by_hand(head: ClassificationHead, hidden: torch.Tensor) -> torch.Tensor:
    first = hidden[:, 0]
    inner = torch.tanh(first @ head.dense.weight.T + head.dense.bias)
    return inner @ head.out_proj.weight.T + head.out_proj.bias


def test_the_head_reads_the_first_token_through_dense_tanh_and_out_proj():
    torch.manual_seed(0)
    head = ClassificationHead(6, 3, dropout=0.1).eval()
    assert (head.dense.in_features, head.dense.out_features, head.out_proj.out_features) == (6, 6, 3)
    assert head.dropout.p == 0.1
    hidden = torch.randn(2, 5, 6)
    with torch.no_grad():
        expected = by_hand(head, hidden)
        assert torch.allclose(head(hidden), expected, atol=1e-6)
        other_tokens = hidden.clone()
        other_tokens[:, 1:] = torch.randn(2, 4, 6)  # only the first token counts
        assert torch.allclose(head(other_tokens, {"labels": torch.tensor([0, 1])}), expected, atol=1e-6)


def test_dropout_applies_in_training_only():
    torch.manual_seed(0)
    head = ClassificationHead(16, 3, dropout=0.5)
    hidden = torch.randn(4, 2, 16)
    with torch.no_grad():
        assert not torch.allclose(head.train()(hidden), by_hand(head, hidden))
        assert torch.allclose(head.eval()(hidden), by_hand(head, hidden), atol=1e-6)
        unregularised = ClassificationHead(16, 3, dropout=0.0)
        unregularised.load_state_dict(head.state_dict())
        assert torch.allclose(unregularised.train()(hidden), by_hand(head, hidden), atol=1e-6)


def test_a_saved_head_loads_back_with_its_meta(tmp_path):
    torch.manual_seed(0)
    head = ClassificationHead(8, 4)
    meta = {"type": "classification", "labels": ["a", "b", "c", "d"], "dropout": 0.1}
    save_head(head, tmp_path / "heads", "toy", meta)  # the folder is made
    assert sorted(p.name for p in (tmp_path / "heads").iterdir()) == ["toy.json", "toy.safetensors"]
    assert load_head_meta(tmp_path / "heads", "toy") == meta
    assert json.loads((tmp_path / "heads" / "toy.json").read_text()) == meta
    torch.manual_seed(1)
    loaded = load_head_weights(ClassificationHead(8, 4), tmp_path / "heads", "toy")
    assert loaded.state_dict().keys() == head.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in head.state_dict().items())
