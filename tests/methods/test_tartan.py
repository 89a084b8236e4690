import csv
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from tartan.config import load_config
from tartan.errors import TartanError
from tartan.run import train

from helpers import ScriptedDev, tiny_overrides

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHORT = {"train.max_steps": 4, "domain.path": "toy_pairs/train.jsonl", "multitask.auxiliary_batch_size": 4,
         "train.log_every": 1, "meta.dev_batch_size": 8}


def weights_by_step(run_dir: Path) -> dict[int, dict[str, float]]:
    by_step: dict[int, dict[str, float]] = {}
    with open(run_dir / "task_weights.csv") as rows:
        for row in csv.DictReader(rows):
            by_step.setdefault(int(row["step"]), {})[row["task"]] = float(row["weight"])
    return by_step


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("recipe", ["mt_tartan", "meta_tartan", "meta_tartan_same_head"])
def test_every_tartan_recipe_runs_on_tiny_models(recipe, kind, tiny_models, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    metrics = train(load_config(RECIPES / f"{recipe}.yaml", tiny_overrides(tiny_models[kind], data_dir, run_dir, **SHORT)))
    assert list(metrics["stages"]) == ["multitask"] and metrics["stages"]["multitask"]["steps"] == 4
    assert metrics["name"] == recipe and set(metrics["test"]) >= {"macro_f1", "accuracy"}
    by_step = weights_by_step(run_dir)
    assert sorted(by_step) == [1, 2, 3, 4]
    for weights in by_step.values():
        assert set(weights) == {"toy", "tapt", "dapt"}
        assert all(w > 0 for w in weights.values()) and sum(weights.values()) == pytest.approx(1, abs=1e-4)
    if recipe == "mt_tartan":
        assert all(w == pytest.approx(1 / 3, abs=1e-5) for w in by_step[4].values())
    else:
        assert by_step[4] != by_step[1]  # learned
    assert AutoModel.from_pretrained(run_dir / "model").config.model_type == kind
    assert {p.name for p in (run_dir / "heads").glob("*.safetensors")} == {"toy.safetensors", "tapt.safetensors",
                                                                          "dapt.safetensors"}


def test_a_labelled_auxiliary_task_and_static_weights(tiny_models, data_dir, tmp_path):
    overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **SHORT,
                               **{"multitask.auxiliary": "toy_pairs", "multitask.weights": "{toy: 3, toy_pairs: 1}"})
    train(load_config(RECIPES / "mt_tartan.yaml", overrides))
    assert weights_by_step(tmp_path / "run")[4] == {"toy": 0.75, "toy_pairs": 0.25}


def test_weights_of_an_unknown_task_are_refused_before_anything_is_written(tiny_models, data_dir, tmp_path):
    overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **SHORT,
                               **{"multitask.weights": "{tpat: 2}"})
    with pytest.raises(TartanError, match="tpat, not a task of this stage"):
        train(load_config(RECIPES / "mt_tartan.yaml", overrides))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("finetune_curve, kept", [([0.4, 0.6, 0.55, 0.1], True),
                                                   ([0.4, 0.5, 0.45, 0.3], False)])  # a tie is no gain
def test_final_fine_tuning_is_kept_only_if_dev_improves(finetune_curve, kept, monkeypatch, tiny_models, data_dir,
                                                        tmp_path):
    from safetensors.torch import load_file

    dev = ScriptedDev({"multitask": [0.3, 0.5, 0.4, 0.2], "finetune": finetune_curve}).install(monkeypatch)
    extra = {**SHORT, "train.max_steps": 12, "multitask.final_finetune": "true", "multitask.auxiliary": "toy_pairs",
             "train.eval_every": 3}
    run_dir = tmp_path / "run"
    metrics = train(load_config(RECIPES / "mt_tartan.yaml", tiny_overrides(tiny_models["bert"], data_dir, run_dir, **extra)))
    stages = metrics["stages"]
    assert list(stages) == ["multitask", "finetune"] and dev.calls == {"multitask": 4, "finetune": 4}
    assert stages["finetune"]["kept"] is kept
    assert stages["multitask"]["best_step"] == stages["finetune"]["best_step"] == 6
    # the run holds the best weights of the stage kept: those of its second evaluation
    best = dev.weights["finetune" if kept else "multitask"][1]
    other = dev.weights["multitask" if kept else "finetune"][1]
    saved = {f"body.{k}": v for k, v in load_file(run_dir / "model" / "model.safetensors").items()}
    saved.update({f"heads.toy.{k}": v for k, v in load_file(run_dir / "heads" / "toy.safetensors").items()})
    compared = [k for k in saved if k in best]
    assert len(compared) > 20 and "heads.toy.dense.weight" in compared
    assert all(torch.equal(saved[k], best[k]) for k in compared)
    assert not all(torch.equal(saved[k], other[k]) for k in compared)


def test_masked_lm_auxiliary_batches_follow_the_run_seed_and_the_held_out_lines_do_not(tiny_models, data_dir):
    from transformers import AutoTokenizer

    from tartan.methods.tartan import auxiliary_task
    from tartan.tasks import task_types

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])

    def tapt_of(seed: int):
        config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=toy",
                                    "data.max_length=32", f"seed={seed}", "multitask.auxiliary_batch_size=4"])
        name, kind, options = auxiliary_task(config, "tapt")
        return task_types.get(kind).from_config(name, config, tokenizer, **options)

    first, second = tapt_of(0), tapt_of(1)
    assert [b.tolist() for b in first.train_batches(0)] != [b.tolist() for b in second.train_batches(0)]
    rows = first.rows["train"][:4]
    assert not torch.equal(first.collate("train", rows, draw=3)["input_ids"], second.collate("train", rows, draw=3)["input_ids"])
    assert first.rows["dev"].tolist() == second.rows["dev"].tolist()
    held_out = first.rows["dev"]
    assert torch.equal(first.collate("heldout", held_out, draw=1)["input_ids"],
                       second.collate("heldout", held_out, draw=1)["input_ids"])
