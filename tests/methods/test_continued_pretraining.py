import threading

import pytest
from transformers import AutoModel

from tartan.config import cache_dir, load_config
from tartan import run as run_module
from tartan.run import train

from helpers import read_jsonl, recipe, tiny_overrides
SHORT = {"train.max_steps": 3, "pretrain.precision": "fp32", "pretrain.batch_size": 8, "domain.path": "toy_pairs/train.jsonl"}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("method", ["finetune", "tapt", "dapt", "dapt_tapt"])
def test_every_method_runs_on_tiny_models(method, kind, tiny_models, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_models[kind], data_dir, run_dir, **SHORT)
    metrics = train(load_config(recipe(method), overrides))
    expected = {"finetune": ["finetune"], "tapt": ["tapt", "finetune"], "dapt": ["dapt", "finetune"],
                "dapt_tapt": ["dapt", "tapt", "finetune"]}[method]
    assert list(metrics["stages"]) == expected
    for stage in expected[:-1]:
        assert metrics["stages"][stage]["steps"] == 3  # train.max_steps bounds every stage
        assert set(metrics["stages"][stage]["best_dev"]) == {"loss", "perplexity", "accuracy"}
    assert AutoModel.from_pretrained(run_dir / "model").config.model_type == kind


def test_runs_started_together_compute_a_shared_stage_once(tiny_models, data_dir, tmp_path, monkeypatch):
    # two runs (as two sweep workers) need the same TAPT stage at once: one computes it while the
    # other waits, then reuses it. Whichever computes it holds on inside the stage until the other has
    # come to the stage's lock: without the lock, the other would find no stored stage and compute it too
    import contextlib

    from tartan import rundir

    computed = []
    real_run_stage, real_exclusive = run_module.run_stage, rundir.exclusive
    arrivals, first_arrived, both_arrived = [], threading.Event(), threading.Event()

    @contextlib.contextmanager
    def exclusive(lock_file, enabled=True):
        if enabled and lock_file is not None:
            arrivals.append(lock_file)
            (first_arrived if len(arrivals) == 1 else both_arrived).set()
        with real_exclusive(lock_file, enabled):
            yield

    def held_run_stage(stage, *args, **kwargs):
        computed.append(stage.name)
        if stage.name == "tapt":
            assert both_arrived.wait(timeout=120), "the other run never came to the stage"
        return real_run_stage(stage, *args, **kwargs)

    monkeypatch.setattr(rundir, "exclusive", exclusive)
    monkeypatch.setattr(run_module, "run_stage", held_run_stage)
    results, errors = {}, []

    def run(seed):
        overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / f"run{seed}", seed=seed, **SHORT)
        try:
            results[seed] = train(load_config(recipe("tapt"), overrides))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
            first_arrived.set()  # let the other run go on
            both_arrived.set()

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (0, 1)]
    # the second run starts once the first has loaded its model: transformers' from_pretrained swaps
    # torch's init functions out and back, and two threads inside it at once can leave them swapped out
    threads[0].start()
    assert first_arrived.wait(timeout=120), "the first run never came to the stage"
    threads[1].start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(arrivals) == 2 and arrivals[0] == arrivals[1]  # the same stage, under the same lock
    assert computed.count("tapt") == 1 and computed.count("finetune") == 2
    assert sorted("reused" in results[seed]["stages"]["tapt"] for seed in (0, 1)) == [False, True]
    assert len(list((cache_dir() / "stages").glob("tapt-*"))) == 1


def test_a_pretraining_stage_is_reused_across_fine_tuning_seeds(tiny_models, data_dir, tmp_path):
    def run(seed, **extra):
        overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / f"run{seed}{len(extra)}",
                                   seed=seed, **{**SHORT, **extra})
        return train(load_config(recipe("tapt"), overrides))

    first = run(0)
    assert "reused" not in first["stages"]["tapt"]
    stores = sorted((cache_dir() / "stages").glob("tapt-*"))
    assert len(stores) == 1
    second = run(1)
    assert second["stages"]["tapt"]["reused"] == str(stores[0])
    assert sorted((cache_dir() / "stages").glob("tapt-*")) == stores  # nothing computed anew
    log = read_jsonl(tmp_path / "run10" / "log.jsonl")
    assert not [r for r in log if r.get("stage") == "tapt" and "loss" in r]  # no MLM step was taken
    changed = run(2, **{"pretrain.lr_body": 5e-4})  # another pre-training config: computed anew
    assert "reused" not in changed["stages"]["tapt"]
    assert len(list((cache_dir() / "stages").glob("tapt-*"))) == 2


def test_whole_word_masking_runs_through_a_method(tiny_models, data_dir, tmp_path):
    overrides = tiny_overrides(tiny_models["roberta"], data_dir, tmp_path / "run", **SHORT, **{"mlm.whole_word": "true"})
    metrics = train(load_config(recipe("tapt"), overrides))
    assert metrics["stages"]["tapt"]["steps"] == 3


def test_a_body_that_cannot_carry_an_mlm_head_is_one_line_and_nothing_written(tiny_models, data_dir, tmp_path,
                                                                              monkeypatch, capsys):
    from tartan.cli import main

    model = tiny_models["bert"]  # built (with its embeddings) before they go
    capsys.readouterr()  # only what the command prints, not the progress bars of a tiny model's first build
    monkeypatch.setattr("transformers.BertModel.get_input_embeddings", lambda self: None)
    run_dir = tmp_path / "run"
    code = main(["train", str(recipe("tapt")), *tiny_overrides(model, data_dir, run_dir, **SHORT)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot carry an MLM head" in err[0]
    assert not run_dir.exists()


def test_a_shorter_run_never_reuses_a_stage_for_a_longer_one(tiny_models, data_dir, tmp_path):
    short = train(load_config(recipe("tapt"), tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "a", **SHORT)))
    longer = train(load_config(recipe("tapt"), tiny_overrides(
        tiny_models["bert"], data_dir, tmp_path / "b", **{**SHORT, "train.max_steps": 4})))
    assert "reused" not in longer["stages"]["tapt"]
    assert (short["stages"]["tapt"]["steps"], longer["stages"]["tapt"]["steps"]) == (3, 4)


def test_dapt_then_tapt_continues_with_the_dapt_trained_mlm_head(tiny_models, data_dir, tmp_path, monkeypatch):
    import torch

    heads = {}  # (stage, "start" | "end") -> the stage's masked-LM head weights
    real_run_stage = run_module.run_stage

    def recording(stage, model, *args, **kwargs):
        name = stage.task_names[0]
        heads[stage.name, "start"] = {k: v.clone() for k, v in model.heads[name].state_dict().items()}
        state = real_run_stage(stage, model, *args, **kwargs)
        heads[stage.name, "end"] = {k: v.clone() for k, v in model.heads[name].state_dict().items()}
        return state

    monkeypatch.setattr(run_module, "run_stage", recording)
    train(load_config(recipe("dapt_tapt"), tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **SHORT)))
    dapt_end, tapt_start = heads["dapt", "end"], heads["tapt", "start"]
    # TAPT's head starts as DAPT left it, which is not where DAPT's began
    assert dapt_end.keys() == tapt_start.keys()
    assert all(torch.equal(dapt_end[k], tapt_start[k]) for k in dapt_end)
    assert any(not torch.equal(heads["dapt", "start"][k], dapt_end[k]) for k in dapt_end)


def test_a_run_killed_after_storing_its_own_stage_keeps_that_stage_as_computed(tiny_models, data_dir, tmp_path,
                                                                                monkeypatch):
    real_run_stage = run_module.run_stage

    def killed_in_finetune(stage, *args, **kwargs):
        if stage.name == "finetune":
            raise KeyboardInterrupt("killed")
        return real_run_stage(stage, *args, **kwargs)

    config = load_config(recipe("tapt"), tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **SHORT))
    monkeypatch.setattr(run_module, "run_stage", killed_in_finetune)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    assert len(list((cache_dir() / "stages").glob("tapt-*"))) == 1  # stored before the kill
    monkeypatch.setattr(run_module, "run_stage", real_run_stage)
    metrics = train(config)
    assert "reused" not in metrics["stages"]["tapt"]  # computed here, so its time counts in this run
    assert metrics["train_seconds"] > metrics["stages"]["finetune"]["train_seconds"]
    log = read_jsonl(tmp_path / "run" / "log.jsonl")
    assert [r for r in log if r.get("stage") == "tapt" and "loss" in r]  # its steps are still in the log
