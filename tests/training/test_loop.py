
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tartan.config import TrainConfig, load_config
from tartan.methods import Stage
from tartan.models.multitask import MultiTaskModel
from tartan.rundir import RunLog
from tartan.run import build_task, make_accelerator
from tartan.training.loop import TaskBatches, linear_schedule, make_optimizer, run_stage


def tiny_setup(tiny_models, data_dir):
    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=toy",
                                "train.batch_size=8", "data.max_length=32", "train.progress=false"])
    task = build_task("toy", "classification", {}, config, AutoTokenizer.from_pretrained(tiny_models["bert"]))
    body = AutoModel.from_pretrained(tiny_models["bert"])
    return config, task, MultiTaskModel(body, {"toy": task.make_head(body)})


def test_optimizer_has_body_and_head_rates_and_no_decay_on_biases_and_norms(tiny_models, data_dir):
    _, _, model = tiny_setup(tiny_models, data_dir)
    optimizer = make_optimizer(model, TrainConfig(lr_body=1e-4, lr_head=1e-3, weight_decay=0.01))
    by_id = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert by_id[id(model.body.embeddings.word_embeddings.weight)]["lr"] == 1e-4
    assert by_id[id(model.body.embeddings.word_embeddings.weight)]["weight_decay"] == 0.01
    assert by_id[id(model.body.embeddings.LayerNorm.weight)]["weight_decay"] == 0.0
    assert by_id[id(model.heads["toy"].dense.weight)]["lr"] == 1e-3
    assert len(by_id) == sum(1 for p in model.parameters())


def test_linear_warmup_then_decay_to_zero():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = linear_schedule(optimizer, warmup_steps=4, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[:4] == sorted(rates[:4]) and rates[3] < 1.0  # rising during warm-up
    assert rates[4] == 1.0 and rates[4:] == sorted(rates[4:], reverse=True)
    assert schedule.get_last_lr()[0] == 0.0  # the last step ends at zero


def test_batches_of_a_step_are_a_pure_function_of_the_step(tiny_models, data_dir):
    _, task, _ = tiny_setup(tiny_models, data_dir)
    first, second = TaskBatches(task), TaskBatches(task)
    device = torch.device("cpu")
    for step in (0, 7, 3, 13, 6):  # out of order, across epochs (6 batches an epoch)
        assert torch.equal(first.at(step, device)["input_ids"], second.at(step, device)["input_ids"])
    # every epoch is shuffled anew
    assert any(not torch.equal(first.at(i, device)["input_ids"], first.at(i + 6, device)["input_ids"]) for i in range(6))


def test_a_stage_leaves_the_model_unprepared_and_holding_its_best_weights(tiny_models, data_dir, tmp_path):
    config, task, model = tiny_setup(tiny_models, data_dir)
    train = TrainConfig(epochs=2, batch_size=8, precision="bf16", progress=False, patience=0)
    state = run_stage(Stage(name="s", tasks=[("toy", "classification", {})]), model, {"toy": task}, train,
                      make_accelerator("bf16"), tmp_path / "stage", RunLog(tmp_path), progress=False)
    # accelerate's bf16 autocast wrapper must not outlive the stage: a later fp32 stage would run in bf16
    assert "forward" not in model.__dict__ and not getattr(model, "_is_accelerate_prepared", False)
    assert state.step == 12 and state.best_step in (6, 12)
    best = task.evaluate(model, "dev", lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert best[task.metric] == state.best_metric


def test_a_checkpoint_resumes_only_the_batches_it_was_drawing(tmp_path):
    from types import SimpleNamespace

    from tartan.errors import TartanError
    from tartan.training.loop import batch_seeds, check_batch_seeds

    stage = Stage(name="multitask", tasks=[("toy", "classification", {}), ("tapt", "mlm", {})])
    # seed 1: the masked-LM objective now follows the run's seed, its data seed (pretrain.seed) is 0
    tasks = {"toy": SimpleNamespace(seed=1), "tapt": SimpleNamespace(seed=1, data_seed=0)}
    check_batch_seeds({"loop": {}, "seeds": batch_seeds(stage, tasks)}, stage, tasks, tmp_path)  # same: resumes
    with pytest.raises(TartanError, match="batches of tapt from seed 0"):
        check_batch_seeds({"loop": {}}, stage, tasks, tmp_path)  # written before checkpoints recorded seeds
    seed_zero = {"toy": SimpleNamespace(seed=0), "tapt": SimpleNamespace(seed=0, data_seed=0)}
    check_batch_seeds({"loop": {}}, stage, seed_zero, tmp_path)  # seed 0 drew the same before: resumes
