import pytest
import torch
import transformers as T
from transformers import AutoModel

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


SIZE = dict(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            pad_token_id=1, max_position_embeddings=40)
MASKED_LMS = {  # one per checkpoint layout of the MLM head
    "bert": lambda: T.BertForMaskedLM(T.BertConfig(**SIZE)),
    "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(**SIZE)),
    "distilbert": lambda: T.DistilBertForMaskedLM(T.DistilBertConfig(vocab_size=99, dim=16, n_layers=1, n_heads=2,
                                                                      hidden_dim=32, pad_token_id=1)),
    # ALBERT and ELECTRA project the hidden states down to a narrower embedding width
    "albert": lambda: T.AlbertForMaskedLM(T.AlbertConfig(embedding_size=8, **SIZE)),
    "electra": lambda: T.ElectraForMaskedLM(T.ElectraConfig(embedding_size=8, **SIZE)),
    "deberta-v2 (legacy head)": lambda: T.DebertaV2ForMaskedLM(T.DebertaV2Config(**SIZE)),
    "deberta-v2": lambda: T.DebertaV2ForMaskedLM(T.DebertaV2Config(legacy=False, **SIZE)),
    "modernbert": lambda: T.ModernBertForMaskedLM(T.ModernBertConfig(bos_token_id=0, eos_token_id=2, cls_token_id=0,
                                                                       sep_token_id=2, **SIZE)),
    "mpnet": lambda: T.MPNetForMaskedLM(T.MPNetConfig(**SIZE)),
    "deberta (v1)": lambda: T.DebertaForMaskedLM(T.DebertaConfig(legacy=False, **SIZE)),
    # activations other than each family's default: the head must apply the one its family does
    "bert (relu)": lambda: T.BertForMaskedLM(T.BertConfig(hidden_act="relu", **SIZE)),
    "roberta (relu body)": lambda: T.RobertaForMaskedLM(T.RobertaConfig(hidden_act="relu", **SIZE)),
    "electra (relu body)": lambda: T.ElectraForMaskedLM(T.ElectraConfig(embedding_size=8, hidden_act="relu", **SIZE)),
    "modernbert (silu, no biases)": lambda: T.ModernBertForMaskedLM(T.ModernBertConfig(
        bos_token_id=0, eos_token_id=2, cls_token_id=0, sep_token_id=2, classifier_activation="silu",
        decoder_bias=False, **SIZE)),
}


@pytest.mark.parametrize("family", list(MASKED_LMS))
def test_a_checkpoints_head_is_loaded_and_scores_as_the_masked_lm_does(family, tmp_path):
    torch.manual_seed(0)
    masked_lm = MASKED_LMS[family]()
    with torch.no_grad():  # away from the initial values (zero biases, unit norms) that would hide a wrong mapping
        for name, parameter in masked_lm.named_parameters():
            if not name.startswith(masked_lm.base_model_prefix):
                parameter.add_(torch.randn_like(parameter) * 0.5)
    masked_lm.save_pretrained(tmp_path)
    masked_lm = type(masked_lm).from_pretrained(tmp_path).eval()
    body = AutoModel.from_pretrained(tmp_path).eval()
    head, loaded = load_mlm_head(body, tmp_path)
    assert loaded
    input_ids = torch.randint(5, 99, (2, 7))
    with torch.no_grad():
        expected = masked_lm(input_ids=input_ids).logits
        logits = head(body(input_ids=input_ids).last_hidden_state)
    assert torch.allclose(logits, expected, atol=1e-5)


def test_a_head_whose_layer_norm_is_named_gamma_and_beta_is_loaded(tmp_path):
    # as in bert-base-uncased's checkpoint (a TensorFlow port): transformers renames them for the body
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    masked_lm = MASKED_LMS["bert"]()
    with torch.no_grad():
        for name, parameter in masked_lm.named_parameters():
            if name.startswith("cls"):
                parameter.add_(torch.randn_like(parameter) * 0.5)
    masked_lm.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file({k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in weights.items()}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    masked_lm = T.BertForMaskedLM.from_pretrained(tmp_path).eval()
    body = AutoModel.from_pretrained(tmp_path).eval()
    head, loaded = load_mlm_head(body, tmp_path)
    assert loaded
    input_ids = torch.randint(5, 99, (2, 7))
    with torch.no_grad():
        assert torch.allclose(head(body(input_ids=input_ids).last_hidden_state), masked_lm(input_ids=input_ids).logits,
                              atol=1e-5)


def test_a_checkpoint_with_a_decoder_of_its_own_is_said_not_to_use_it(tmp_path, capsys):
    T.BertForMaskedLM(T.BertConfig(tie_word_embeddings=False, **SIZE)).save_pretrained(tmp_path)
    head, loaded = load_mlm_head(AutoModel.from_pretrained(tmp_path), tmp_path)
    assert loaded and "decoder of its own" in capsys.readouterr().err


def test_a_model_without_word_embeddings_cannot_carry_an_mlm_head(tiny_models, monkeypatch):
    body = AutoModel.from_pretrained(tiny_models["bert"])
    monkeypatch.setattr(type(body), "get_input_embeddings", lambda self: None)
    with pytest.raises(TartanError, match="cannot carry an MLM head"):
        MaskedLMHead(body)
