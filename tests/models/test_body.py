import logging
from types import SimpleNamespace

import pytest
from transformers import AutoModel

from tartan.config import load_config
from tartan.errors import TartanError
from tartan.inference import evaluate_run
from tartan.methods import methods
from tartan.models.body import load_body
from tartan.report import setting_of
from tartan.run import stage_key, train
from tartan.rundir import read_config

from helpers import custom_code_model, tiny_overrides

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
        keys.append(stage_key(config, stage, tasks, ""))
    assert keys[0] != keys[1]


def test_a_model_with_code_of_its_own_needs_trust_remote_code(tiny_models, data_dir, tmp_path):
    model = custom_code_model(tiny_models, tmp_path / "custom")
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(model, data_dir, run_dir, **{"train.max_steps": 2})
    with pytest.raises(TartanError, match="runs code of its own: pass trust_remote_code=true"):
        train(load_config(None, overrides))
    train(load_config(None, overrides + ["trust_remote_code=true"]))
    assert (run_dir / "model" / "modeling_tiny.py").is_file()  # the saved model keeps its code
    # evaluating the finished run loads it the way it was trained
    assert set(evaluate_run(run_dir, "dev")) >= {"macro_f1", "accuracy"}


def test_trust_remote_code_does_not_make_a_run_another_config(tiny_models, data_dir, tmp_path):
    # it permits loading a model and changes nothing the run computes
    def run(folder: str, *extra: str) -> dict:
        overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / folder, **{"train.max_steps": 2})
        return train(load_config(None, overrides + list(extra)))

    plain, trusted = run("plain"), run("trusted", "trust_remote_code=true")
    assert (trusted["dev"], trusted["test"], trusted["best_step"]) == (plain["dev"], plain["test"], plain["best_step"])
    configs = [read_config(tmp_path / folder) for folder in ("plain", "trusted")]
    assert [c["trust_remote_code"] for c in configs] == [False, True]  # saved as set
    assert setting_of(configs[0]) == setting_of(configs[1])  # the report groups them as seeds of one config
    # and the finished run is the same run with it set: not retrained, not refused as another config
    assert run("plain", "trust_remote_code=true") == plain


def test_weights_missing_from_a_checkpoint_are_one_warning_a_missing_pooler_none(tiny_models, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    body, tokenizer = load_body(str(tiny_models["bert"]))
    body.save_pretrained(tmp_path / "saved")  # as a run saves it: without the pooler
    tokenizer.save_pretrained(tmp_path / "saved")
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # transformers' own handler writes to the stderr of import time, not capsys's
    logging.getLogger("transformers").addHandler(handler)
    try:
        capsys.readouterr()
        load_body(str(tmp_path / "saved"))
        assert "warning" not in capsys.readouterr().err
        assert not [r for r in records if r.levelno >= logging.WARNING]  # nor transformers' load report

        weights = tmp_path / "saved" / "model.safetensors"
        save_file({k: v for k, v in load_file(weights).items() if ".layer.1." not in k}, weights, metadata={"format": "pt"})
        load_body(str(tmp_path / "saved"))
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    err = capsys.readouterr().err
    assert "weights are not in its checkpoint and start at random: encoder.layer.1." in err
    assert len(err.strip().splitlines()) == 1


def test_a_weight_that_does_not_fit_the_config_is_one_line_naming_it(tiny_models):
    with pytest.raises(TartanError, match=r"do not fit its config, such as embeddings.position_embeddings.weight "
                                          r"\(\(80, 32\) stored, \(64, 32\) expected\) \(see model_config\)"):
        load_body(str(tiny_models["bert"]), config_overrides={"max_position_embeddings": 64})


def test_a_model_folder_without_its_tokenizer_files_is_one_line(tiny_models, tmp_path):
    """transformers builds a tokenizer of the special tokens alone from such a folder: every word
    would be the unknown token."""
    folder = tmp_path / "weights_only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((tiny_models["bert"] / name).read_bytes())
    with pytest.raises(TartanError, match=r"the tokenizer has \d+ tokens for a model of vocab_size \d+: its "
                                          r"tokenizer files are missing") as caught:
        load_body(str(folder))
    assert caught.value.path == str(folder)


def test_a_local_model_folder_is_recorded_absolute_so_the_run_directory_works_from_anywhere(
        tiny_models, data_dir, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_models["bert"], tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    overrides = tiny_overrides("models/tiny", data_dir, run_dir, **{"train.max_steps": 2})
    result = train(load_config(None, overrides))
    assert read_config(run_dir)["model"] == str(tmp_path / "models" / "tiny")
    # `tartan train RUN_DIR --force` from another folder finds the model and trains the same run again
    monkeypatch.chdir(data_dir)
    again = train(load_config(run_dir / "config.yaml", [f"output_dir={run_dir}"]), force=True)
    assert (again["dev"], again["best_step"]) == (result["dev"], result["best_step"])
    # a run saved with the folder as typed, relative (before it was recorded absolute), is still
    # the run asked for from where it was typed: read back, not refused as another config
    saved = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(saved.replace(str(tmp_path / "models" / "tiny"), "models/tiny"))
    monkeypatch.chdir(tmp_path)
    assert train(load_config(None, overrides))["dev"] == result["dev"]
