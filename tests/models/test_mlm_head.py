import pytest
import torch
from transformers import AutoModel, BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

from tartan.errors import TartanError
from tartan.models.mlm_head import MaskedLMHead, load_mlm_head


def test_created_head_has_its_decoder_tied_to_the_word_embeddings(tiny_models):
    for kind in ("bert", "roberta", "distilbert"):
        body = AutoModel.from_pretrained(tiny_models[kind])
        head, loaded = load_mlm_head(body, tiny_models[kind])
        assert not loaded  # these checkpoints have no MLM head
        assert head.decoder_weight is body.get_input_embeddings().weight
        assert "decoder_weight" not in dict(head.named_parameters())  # not a copy
        with torch.no_grad():
            body.get_input_embeddings().weight[5] += 1.0
        hidden = torch.randn(3, body.config.hidden_size if kind != "distilbert" else body.config.dim)
        expected = torch.nn.functional.linear(head.norm(head.activation(head.dense(hidden))),
                                              body.get_input_embeddings().weight, head.bias)
        assert torch.allclose(head(hidden), expected)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_head_is_loaded_from_a_checkpoint_that_has_one(family, tmp_path):
    size = dict(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    if family == "bert":
        full = BertForMaskedLM(BertConfig(**size))
        dense, bias = full.cls.predictions.transform.dense.weight, full.cls.predictions.bias
    else:
        full = RobertaForMaskedLM(RobertaConfig(pad_token_id=1, **size))
        dense, bias = full.lm_head.dense.weight, full.lm_head.bias
    with torch.no_grad():
        bias.add_(0.5)
    full.save_pretrained(tmp_path)
    body = AutoModel.from_pretrained(tmp_path)
    head, loaded = load_mlm_head(body, tmp_path)
    assert loaded
    assert torch.equal(head.dense.weight, dense) and torch.equal(head.bias, bias)


def test_a_model_without_word_embeddings_cannot_carry_an_mlm_head(tiny_models, monkeypatch):
    body = AutoModel.from_pretrained(tiny_models["bert"])
    monkeypatch.setattr(type(body), "get_input_embeddings", lambda self: None)
    with pytest.raises(TartanError, match="cannot carry an MLM head"):
        MaskedLMHead(body)
