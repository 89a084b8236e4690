"""tartan.config: defaults, recipes, dotted overrides, and one-line errors naming the recipe line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tartan.config import Config, load_config, save_config
from tartan.errors import TartanError

from helpers import recipe as recipe_path


def write_recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(recipe, overrides=()) -> TartanError:
    with pytest.raises(TartanError) as caught:
        load_config(recipe, list(overrides))
    assert "\n" not in str(caught.value)
    return caught.value


def test_defaults():
    config = load_config(None)
    default = Config()
    assert config.method == "finetune" and config.model == "minilm" and config.seed == 0
    assert config.name == "finetune"  # no recipe: named after the method
    assert config.data_dir is None and config.output_dir is None and config.metric is None
    assert config.train == default.train and config.data == default.data
    assert config.train.lr_body == 1e-4 and config.train.precision == "auto" and config.train.max_steps is None
    assert config.device == "auto" and config.train.accumulate == 1


def test_recipe_values_over_defaults(tmp_path):
    recipe = write_recipe(tmp_path, "method: finetune\nmodel: roberta-base\nseed: 3\n"
                                    "data:\n  max_length: 128\n"
                                    "train:\n  epochs: 4\n  lr_body: 2e-5\n  max_steps: 100\n  progress: false\n",
                          name="my_recipe.yaml")
    config = load_config(recipe)
    assert config.name == "my_recipe"
    assert config.model == "roberta-base" and config.seed == 3 and config.data.max_length == 128
    assert config.train.epochs == 4 and config.train.max_steps == 100 and config.train.progress is False
    assert config.train.lr_body == 2e-5 and isinstance(config.train.lr_body, float)
    # untouched keys keep their defaults, within a section too
    assert config.train.batch_size == 16 and config.data.bucket_batches == 50


def test_name_in_recipe_wins_over_stem(tmp_path):
    assert load_config(write_recipe(tmp_path, "name: mine\n")).name == "mine"


def test_empty_recipe_is_the_defaults(tmp_path):
    config = load_config(write_recipe(tmp_path, "# nothing here\n", name="empty.yaml"))
    assert config.name == "empty" and config.train == Config().train


def test_finetune_recipe_values():
    config = load_config(recipe_path("finetune"))
    assert config.name == "finetune" and config.method == "finetune"
    assert config.train.lr_body == 1e-4 and config.train.lr_head == 1e-3


def test_dotted_overrides(tmp_path):
    recipe = write_recipe(tmp_path, "train:\n  epochs: 4\n")
    config = load_config(recipe, ["train.epochs=2", "seed=7", "data.max_length=64", "train.lr_body=1e-4",
                                  "train.lr_head=3.0e-3", "train.progress=false", "model=/models/x",
                                  "train.max_steps=null", "metric=accuracy", "output_dir=runs/a=b"])
    assert config.train.epochs == 2 and config.seed == 7 and config.data.max_length == 64
    assert config.train.lr_body == 1e-4 and isinstance(config.train.lr_body, float)  # YAML 1.1 reads 1e-4 as a str
    assert config.train.lr_head == 3e-3
    assert config.train.progress is False and config.model == "/models/x"
    assert config.train.max_steps is None and config.metric == "accuracy"
    assert config.output_dir == "runs/a=b"  # only the first '=' separates


def test_later_overrides_win():
    assert load_config(None, ["seed=1", "seed=2"]).seed == 2


def test_integer_where_a_float_is_expected():
    config = load_config(None, ["train.warmup=0", "train.grad_clip=2"])
    assert config.train.warmup == 0.0 and isinstance(config.train.grad_clip, float)


def test_unknown_key_in_recipe_names_path_and_line(tmp_path):
    recipe = write_recipe(tmp_path, "method: finetune\n# a comment\ntrain:\n  epochs: 3\n\n  learning_rate: 1\n")
    error = config_error(recipe)
    assert (error.path, error.line) == (str(recipe), 6)
    assert str(error).startswith(f"{recipe}:6: ")
    assert "train.learning_rate" in error.message and "lr_body" in error.message  # lists the known keys


def test_unknown_top_level_key_in_recipe(tmp_path):
    recipe = write_recipe(tmp_path, "method: finetune\nepoch: 3\n")
    error = config_error(recipe)
    assert (error.path, error.line) == (str(recipe), 2)
    assert "'epoch'" in error.message


@pytest.mark.parametrize("override, wrong", [("train.learning_rate=1", "train.learning_rate"),
                                             ("epochs=3", "epochs"), ("nope.x=1", "nope"),
                                             ("seed.x=1", "seed")])
def test_unknown_override_key(override, wrong):
    error = config_error(None, [override])
    assert override in str(error) and wrong in str(error)


def test_override_without_equals():
    error = config_error(None, ["train.epochs"])
    assert "key=value" in str(error) and "train.epochs" in str(error)


def test_override_of_a_whole_section():
    error = config_error(None, ["train=3"])
    assert "section" in str(error)


@pytest.mark.parametrize("override, expected", [("train.epochs=ten", "integer"), ("train.batch_size=1.5", "integer"),
                                                ("train.lr_body=fast", "number"), ("train.progress=maybe", "true or false"),
                                                ("seed=true", "integer"), ("model=", "no value"), ("seed=[1]", "integer")])
def test_wrong_type_in_override(override, expected):
    error = config_error(None, [override])
    assert override in str(error) and expected in error.message


@pytest.mark.parametrize("line, expected", [("epochs: ten", "integer"), ("batch_size: 1.5", "integer"),
                                            ("lr_body: fast", "number"), ("progress: maybe", "true or false"),
                                            ("epochs:", "empty")])
def test_wrong_type_in_recipe_names_path_and_line(tmp_path, line, expected):
    recipe = write_recipe(tmp_path, f"method: finetune\ntrain:\n  patience: 2\n  {line}\n")
    error = config_error(recipe)
    assert (error.path, error.line) == (str(recipe), 4)
    assert expected in error.message


def test_section_given_a_scalar_names_the_line(tmp_path):
    recipe = write_recipe(tmp_path, "seed: 1\ntrain: 5\n")
    error = config_error(recipe)
    assert (error.path, error.line) == (str(recipe), 2)
    assert "mapping" in error.message


def test_bad_precision_choice():
    error = config_error(None, ["train.precision=fp8"])
    assert "train.precision" in error.message and "bf16" in error.message and "'fp8'" in error.message


def test_bad_precision_in_recipe_names_the_line(tmp_path):
    recipe = write_recipe(tmp_path, "method: finetune\ntrain:\n  precision: fp8\n")
    error = config_error(recipe)
    assert (error.path, error.line) == (str(recipe), 3)


def test_bad_precision_in_override_names_the_override():
    error = config_error(recipe_path("finetune"), ["train.precision=fp8"])
    assert "override" in str(error)


@pytest.mark.parametrize("override, key", [("metric=bleu", "metric"), ("train.batch_size=0", "train.batch_size"),
                                           ("data.max_length=-1", "data.max_length"), ("train.warmup=1", "train.warmup"),
                                           ("train.max_steps=0", "train.max_steps")])
def test_out_of_range_values(override, key):
    assert key in config_error(None, [override]).message


@pytest.mark.parametrize("text, line", [("method: finetune\ntrain:\n  epochs: [1, 2\n", None),
                                        ("method: finetune\nseed: 1: 2\n", 2),
                                        ("method: finetune\ntrain:\n\tepochs: 3\n", 3),
                                        ("seed: 1\n  model: x\n", 2)])
def test_malformed_yaml_names_the_line(tmp_path, text, line):
    recipe = write_recipe(tmp_path, text)
    error = config_error(recipe)
    assert error.path == str(recipe) and "malformed YAML" in error.message
    assert error.line is not None
    if line is not None:
        assert error.line == line


def test_recipe_that_is_not_a_mapping(tmp_path):
    error = config_error(write_recipe(tmp_path, "- a\n- b\n"))
    assert error.line == 1 and "mapping" in error.message


def test_recipe_that_is_not_utf8(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"model: \xff\xfe\n")
    error = config_error(recipe)
    assert error.path == str(recipe) and "UTF-8" in error.message


def test_missing_recipe(tmp_path):
    error = config_error(tmp_path / "absent.yaml")
    assert error.path == str(tmp_path / "absent.yaml") and "not found" in error.message


def test_saved_config_loads_back_to_the_same(tmp_path):
    config = load_config(recipe_path("finetune"), ["seed=4", "train.lr_body=3e-5", "output_dir=/x"])
    path = write_recipe(tmp_path, save_config(config), name="config.yaml")
    again = load_config(path)
    assert again == config
    assert yaml.safe_load(save_config(again)) == config.to_dict()


def test_string_overrides_stay_as_typed():
    from tartan.config import load_config

    config = load_config(None, ["end_task=1.10", "name=010"])
    assert (config.end_task, config.name) == ("1.10", "010")


@pytest.mark.parametrize("value, needle", [("0", "above 0"), ("1.5", "at most 1"), ("-0.1", "above 0")])
def test_a_train_fraction_outside_zero_to_one_is_refused(value, needle):
    with pytest.raises(TartanError, match=needle):
        load_config(None, [f"data.train_fraction={value}"])


def test_a_tasks_type_is_read_from_a_recipe_or_an_override_and_saved(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tasks:\n  stsb:\n    type: regression\n")
    config = load_config(recipe, ["tasks.copa.type=multiple_choice"])
    assert {name: section.type for name, section in config.tasks.items()} == {"stsb": "regression",
                                                                              "copa": "multiple_choice"}
    (tmp_path / "saved.yaml").write_text(save_config(config))
    again = load_config(tmp_path / "saved.yaml")
    assert again.tasks["stsb"].type == "regression" and again.tasks["copa"].type == "multiple_choice"


@pytest.mark.parametrize("override, needle", [("tasks.stsb=regression", "set tasks.NAME.KEY"),
                                              ("tasks.stsb.kind=regression", "unknown config key 'tasks.stsb.kind'")])
def test_a_tasks_override_without_a_key_or_with_an_unknown_one_is_refused(override, needle):
    with pytest.raises(TartanError, match=needle):
        load_config(None, [override])


def test_a_tasks_section_that_is_not_a_mapping_of_sections_names_its_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: finetune\ntasks:\n  stsb: regression\n")
    with pytest.raises(TartanError, match="tasks must map names to sections") as error:
        load_config(recipe)
    assert error.value.line == 2


def test_a_yaml_merge_key_sets_defaults_that_the_mapping_overrides(tmp_path):
    """`<<: *anchor` is YAML's way to share a section's settings; a key the mapping then sets itself
    is an override, not a key given twice."""
    path = write_recipe(tmp_path, "pretrain: &stage {epochs: 3, lr_body: 2.0e-5}\n"
                                  "train: {<<: *stage, batch_size: 8, epochs: 5}\n")
    config = load_config(path)
    assert (config.train.epochs, config.train.lr_body, config.train.batch_size) == (5, 2e-5, 8)
    assert config.pretrain.epochs == 3
    twice = write_recipe(tmp_path, "train: {<<: {epochs: 3}, batch_size: 8, batch_size: 16}\n", "twice.yaml")
    assert "'batch_size' appears twice" in config_error(twice).message


def test_integers_are_read_as_typed_not_as_yaml_1_1_octal_or_base_60(tmp_path):
    """YAML 1.1 (PyYAML) reads `010` as 8 and `1:30` as 90; a setting typed 010 means ten."""
    path = write_recipe(tmp_path, "train: {epochs: 010, batch_size: 0x10, max_steps: 1_000}\n")
    config = load_config(path)
    assert (config.train.epochs, config.train.batch_size, config.train.max_steps) == (10, 16, 1000)
    assert load_config(None, ["train.epochs=010"]).train.epochs == 10
    with pytest.raises(TartanError, match="train.epochs must be an integer, got '1:30'"):
        load_config(None, ["train.epochs=1:30"])
