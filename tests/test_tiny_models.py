import pytest
from transformers import AutoModel, AutoTokenizer


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_tiny_models_load_with_auto_classes(kind, tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[kind])
    model = AutoModel.from_pretrained(tiny_models[kind])
    ids = tokenizer("background the model", "a pair")["input_ids"]
    assert len(ids) > 4
    assert model.config.hidden_size == 32
