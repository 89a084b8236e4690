from transformers import AutoModel, AutoTokenizer


def test_tiny_models_load_with_auto_classes(tiny_models):
    for kind, path in tiny_models.items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
        ids = tokenizer("background the model", "a pair")["input_ids"]
        assert len(ids) > 4, kind
        assert model.config.hidden_size == 32
