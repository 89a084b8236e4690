"""tartan.models.multitask: encode(batch) is the body's last hidden states with the batch's inputs
(token types only for a body that takes them, R3F's noise added to the token embeddings), and
forward(task, batch) is that task's head on them."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tartan.models.heads import ClassificationHead
from tartan.models.multitask import MultiTaskModel


@pytest.fixture()
def body_and_pairs(tiny_models):
    torch.manual_seed(0)
    body = AutoModel.from_pretrained(tiny_models["bert"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    # (the tiny tokenizers give token types only when asked: their model_input_names leave them out)
    batch = dict(tokenizer(["zeta the model learns", "kappa text"], ["a pair of words", "more"], padding=True,
                           return_token_type_ids=True, return_tensors="pt"))
    assert batch["token_type_ids"].any() and not batch["attention_mask"].all()  # pairs, and padding
    return body, batch


def test_encode_is_the_body_on_the_batch_with_its_token_types(body_and_pairs):
    body, batch = body_and_pairs
    model = MultiTaskModel(body, {})
    with torch.no_grad():
        expected = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"]).last_hidden_state
        assert torch.equal(model.encode({**batch, "labels": torch.tensor([0, 1])}), expected)


def test_encode_leaves_token_types_out_for_a_body_without_them(body_and_pairs):
    body, batch = body_and_pairs
    model = MultiTaskModel(body, {}, token_types=False)
    with torch.no_grad():
        expected = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        assert torch.equal(model.encode(batch), expected)
        assert not torch.allclose(model.encode(batch), MultiTaskModel(body, {}).encode(batch))


def test_encode_adds_the_noise_to_the_token_embeddings(body_and_pairs):
    body, batch = body_and_pairs
    model = MultiTaskModel(body, {})
    noise = 0.1 * torch.randn(*batch["input_ids"].shape, body.config.hidden_size)
    with torch.no_grad():
        embeddings = body.get_input_embeddings()(batch["input_ids"])
        expected = body(inputs_embeds=embeddings + noise, attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"]).last_hidden_state
        assert torch.allclose(model.encode(batch, embedding_noise=noise), expected, atol=1e-6)
        assert torch.allclose(model.encode(batch, embedding_noise=torch.zeros_like(noise)), model.encode(batch),
                              atol=1e-5)
        assert not torch.allclose(model.encode(batch, embedding_noise=noise), model.encode(batch), atol=1e-3)


def test_forward_is_the_tasks_head_on_the_encoded_batch(body_and_pairs):
    body, batch = body_and_pairs
    torch.manual_seed(1)
    heads = {"a": ClassificationHead(32, 3), "b": ClassificationHead(32, 2)}
    model = MultiTaskModel(body, heads).eval()
    with torch.no_grad():
        hidden = model.encode(batch)
        for name, head in heads.items():
            assert torch.equal(model(name, batch), head(hidden, batch))
    assert set(dict(model.named_children())) == {"body", "heads"}  # one module: its parameters are all of them
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"body", "heads"}


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "albert", "electra", "xlm-roberta", "mpnet",
                                  "deberta-v2", "modernbert"])
def test_the_prepared_attention_mask_encodes_as_the_padding_mask_does(kind, tiny_models):
    # the 4D mask that spares transformers a read of the padding mask on the host computes what the
    # 2D mask computes, at every real token; families that take no prepared mask get the 2D one
    from tartan.models.body import accepts_token_types, load_body
    from tartan.models.multitask import PREPARED_MASK_TYPES

    body, tokenizer = load_body(str(tiny_models[kind]))
    model = MultiTaskModel(body, {}, token_types=accepts_token_types(body)).eval()
    encoded = tokenizer(["a short one", "a much longer sentence with many more words in it"], padding=True,
                        return_tensors="pt")
    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    assert (model.prepared_mask(batch["attention_mask"]).dim() == 4) == (body.config.model_type in PREPARED_MASK_TYPES)
    with torch.no_grad():
        ours = model.encode(batch)
        theirs = body(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert not real.all()  # padded
    assert torch.allclose(ours[real], theirs[real], atol=1e-6)
