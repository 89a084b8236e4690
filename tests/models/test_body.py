from types import SimpleNamespace

import pytest
from transformers import AutoModel

from tartan.config import load_config
from tartan.errors import TartanError
from tartan.methods import methods
from tartan.models.body import load_body
from tartan.run import stage_key, train

from conftest import tiny_overrides

ATTENTION_DROPOUT = {"bert": "attention_probs_dropout_prob", "roberta": "attention_probs_dropout_prob",
                     "distilbert": "attention_dropout"}


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_config_overrides_reach_the_loaded_attention(kind, tiny_models):
    key = ATTENTION_DROPOUT[kind]
    plain, _ = load_body(str(tiny_models[kind]))
    body, _ = load_body(str(tiny_models[kind]), config_overrides={key: 0.0})
    assert getattr(plain.config, key) > 0 and getattr(body.config, key) == 0
    attention_dropouts = [m.dropout.p if hasattr(m.dropout, "p") else m.dropout for m in body.modules()
                          if "Attention" in type(m).__name__ and hasattr(m, "dropout")]
    assert attention_dropouts and all(p == 0 for p in attention_dropouts)


def test_integral_overrides_stay_integers(tiny_models):
    body, _ = load_body(str(tiny_models["bert"]), config_overrides={"num_hidden_layers": 1.0})
    assert body.config.num_hidden_layers == 1 and isinstance(body.config.num_hidden_layers, int)
    assert len(body.encoder.layer) == 1


def test_unknown_config_attribute_is_one_line_naming_it(tiny_models):
    with pytest.raises(TartanError, match="model_config.attention_dropout_typo.*has no attribute"):
        load_body(str(tiny_models["bert"]), config_overrides={"attention_dropout_typo": 0.0})


def test_a_run_saves_the_overridden_config(tiny_models, data_dir, tmp_path):
    overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **{"train.epochs": 1})
    train(load_config(None, overrides + ["model_config={attention_probs_dropout_prob: 0}"]))
    assert AutoModel.from_pretrained(tmp_path / "run" / "model").config.attention_probs_dropout_prob == 0


def test_model_config_is_part_of_a_reusable_stage_key(tiny_models, data_dir, tmp_path):
    base = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run") + ["method=tapt"]
    keys = []
    for extra in ([], ["model_config={attention_probs_dropout_prob: 0}"]):
        config = load_config(None, base + extra)
        stage = methods.get("tapt")(config)[0]
        tasks = {name: SimpleNamespace(digest="d") for name, _, _ in stage.tasks}
        keys.append(stage_key(config, stage, tasks, config.pretrain, ""))
    assert keys[0] != keys[1]
