
"""The training loop: optimizer groups, schedule, batches as a function of the step, selection on dev,
early stopping and resume (with the dev metric scripted), a task drawn twice, what a stage counts."""
import pytest
import torch

from tartan.config import TrainConfig
from tartan.methods import Stage
from tartan.rundir import RunLog
from tartan.training.device import make_accelerator
from tartan.training.loop import TaskBatches, linear_schedule, make_optimizer, run_stage

from helpers import Interrupted, ScriptedDev, build_multitask, same_weights


def tiny_setup(tiny_models, data_dir, dropout: bool = True):
    """(config, toy task with 6 batches of 8 an epoch, tiny BERT with its head)."""
    return build_multitask(tiny_models["bert"], data_dir, dropout=dropout)


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
    # rising over the 4 warm-up steps to (k + 1) / 5, then falling linearly to 0 after the last step
    assert rates == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert schedule.get_last_lr()[0] == 0.0
    # a one-step stage without warm-up takes its one step at the full rate
    single = linear_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), warmup_steps=0, total_steps=1)
    assert single.get_last_lr()[0] == 1.0


def test_batches_of_a_step_are_a_pure_function_of_the_step(tiny_models, data_dir):
    _, task, _ = tiny_setup(tiny_models, data_dir)
    first, second, resumed = TaskBatches(task), TaskBatches(task), TaskBatches(task)
    # a resumed run's first batch may be of any epoch
    assert torch.equal(resumed.at(7).rows["input_ids"], first.at(7).rows["input_ids"])
    for step in (0, 7, 3, 13, 6):  # out of order, across epochs (6 batches an epoch)
        assert torch.equal(first.at(step).rows["input_ids"], second.at(step).rows["input_ids"])
    # every epoch is shuffled anew
    assert any(not torch.equal(first.at(i).rows["input_ids"], first.at(i + 6).rows["input_ids"]) for i in range(6))


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


# ---- selection on dev, early stopping and resume, with the dev metric scripted -----------------------

def run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, dev: ScriptedDev, **train_options):
    dev.install(monkeypatch)
    config, task, model = tiny_setup(tiny_models, data_dir)
    options = {"epochs": 2, "batch_size": 8, "precision": "fp32", "progress": False, "eval_every": 2,
               "patience": 0, **train_options}
    state = run_stage(Stage(name="s", tasks=[("toy", "classification", {})]), model, {"toy": task},
                      TrainConfig(**options), make_accelerator("fp32"), tmp_path / "stage", RunLog(tmp_path),
                      progress=False)
    return state, model


def test_the_stage_keeps_the_weights_of_its_best_evaluation_not_its_last(monkeypatch, tmp_path, tiny_models, data_dir):
    dev = ScriptedDev({"s": [0.2, 0.6, 0.4, 0.5, 0.3, 0.55]})  # 12 steps, an evaluation every 2
    state, model = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, dev)
    assert dev.calls == {"s": 6} and state.step == 12 and not state.stopped_early
    assert state.best_step == 4 and state.best_metric == 0.6 and state.best_dev == {"macro_f1": 0.6}
    assert same_weights(model, dev.weights["s"][1])
    assert not same_weights(model, dev.weights["s"][-1])
    evaluations = [r for r in RunLog(tmp_path).records() if "dev" in r]
    assert [r["step"] for r in evaluations] == [2, 4, 6, 8, 10, 12]
    assert [r["best"] for r in evaluations] == [True, True, False, False, False, False]
    assert [r["epoch"] for r in evaluations] == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert {r["task"] for r in evaluations} == {"toy"}  # whose dev figures they are


def test_evaluations_while_the_heads_warm_up_do_not_count_towards_patience(monkeypatch, tmp_path, tiny_models,
                                                                         data_dir):
    # warm-up for 4 steps, evaluations every 2, patience 2: the evaluation at 4 comes before the
    # body has trained a step, and must not help stop the stage at 6
    dev = ScriptedDev({"s": [0.5, 0.4, 0.3, 0.6, 0.2, 0.1]})
    state, _ = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, dev, patience=2, head_warmup_steps=4)
    assert state.best_step == 8 and state.step == 12 and state.stopped_early


def test_a_tie_is_not_an_improvement(monkeypatch, tmp_path, tiny_models, data_dir):
    dev = ScriptedDev({"s": [0.5, 0.5, 0.4, 0.3, 0.2, 0.1]})
    state, model = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, dev)
    assert state.best_step == 2 and same_weights(model, dev.weights["s"][0])


def test_patience_stops_the_stage_after_that_many_evaluations_without_improvement(monkeypatch, tmp_path,
                                                                                 tiny_models, data_dir):
    dev = ScriptedDev({"s": [0.5, 0.4, 0.6, 0.5, 0.5, 0.9]})
    state, model = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, dev, patience=2)
    # improvements at 2 and 6; 8 and 10 are two without: stop at 10, before the 0.9 at 12
    assert dev.calls == {"s": 5} and state.stopped_early and state.step == 10
    assert state.best_step == 6 and state.stale_evals == 2 and same_weights(model, dev.weights["s"][2])
    # a stopped stage, run again, trains no further
    again, model = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, dev, patience=2)
    assert dev.calls == {"s": 5} and again.step == 10 and again.best_step == 6
    assert same_weights(model, dev.weights["s"][2])


def test_a_resumed_stage_counts_the_evaluations_without_improvement_from_before_the_kill(
        monkeypatch, tmp_path, tiny_models, data_dir):
    curve = [0.5, 0.4, 0.3, 0.2, 0.9, 0.9]
    killed = ScriptedDev({"s": curve}, fail_at={"s": 2})  # killed at step 6, after the checkpoint of step 4
    with pytest.raises(Interrupted):
        run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, killed, patience=3)
    resumed = ScriptedDev({"s": curve[2:]})
    state, model = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, resumed, patience=3)
    # stale at 4 (before the kill), 6 and 8: the third stops it at 8, as an uninterrupted run would
    assert resumed.calls == {"s": 2} and state.stopped_early and state.step == 8
    assert state.best_step == 2 and same_weights(model, killed.weights["s"][0])


class FirstStep:
    """Runs one step of a stage and keeps the gradients of that step twice: as the strategy left
    them (before averaging and clipping) and as the optimizer stepped on them."""

    def __init__(self, monkeypatch):
        import tartan.training.loop as loop

        self.left, self.stepped = {}, {}
        make_optimizer_ = loop.make_optimizer

        def grads(model):
            return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

        def make(model, train):
            optimizer = make_optimizer_(model, train)
            optimizer.register_step_pre_hook(lambda *_: self.stepped or self.stepped.update(grads(model)))
            return optimizer

        monkeypatch.setattr(loop, "make_optimizer", make)
        monkeypatch.setattr(loop.OverlappedAveraging, "finish",
                            lambda averaging, body_averaged=False: self.left or self.left.update(grads(averaging.model)))


def gradient_of(model, loss) -> dict[str, torch.Tensor]:
    gradients = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return {n: g for (n, _), g in zip(model.named_parameters(), gradients) if g is not None}


def norm(gradients: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in gradients.values())))


def test_a_task_drawn_twice_in_a_step_steps_on_the_sum_of_both_batches_gradients(monkeypatch, tmp_path,
                                                                                tiny_models, data_dir):
    import copy

    config, task, model = tiny_setup(tiny_models, data_dir, dropout=False)
    start = copy.deepcopy(model)
    batches = TaskBatches(task)
    losses = [task.loss(start("toy", batches.at(n).rows), batches.at(n).rows)
              for n in (0, 1)]
    expected = gradient_of(start, losses[0] + losses[1])
    step = FirstStep(monkeypatch)
    # dataset_homogeneous with 2 batches an update over one task: step 0 draws the task's batches 0 and 1;
    # clipped below 1, so that a clip that only started above 1 would show
    stage = Stage(name="s", tasks=[("toy", "classification", {})], weighting="sum",
                  sampling="dataset_homogeneous", sampling_options={"tasks_per_update": 2})
    clip = 0.5
    assert norm(expected) > 2 * clip
    train = TrainConfig(max_steps=1, batch_size=8, precision="fp32", progress=False, patience=0, grad_clip=clip,
                        log_every=1, lr_body=1e-3, lr_head=1e-3, weight_decay=0.0)
    run_stage(stage, model, {"toy": task}, train, make_accelerator("fp32"), tmp_path / "stage", RunLog(tmp_path),
              progress=False)
    assert set(step.left) == set(expected) == set(step.stepped)  # every parameter of the body and the head
    for name, gradient in step.left.items():
        assert torch.allclose(gradient, expected[name], atol=1e-5), name
        assert torch.allclose(step.stepped[name], expected[name] * clip / norm(expected), atol=1e-5), name
    # the logged loss is the mean over the task's batches of the step
    logged = next(r for r in RunLog(tmp_path).records() if "loss" in r)
    assert logged["loss"]["toy"] == pytest.approx(float((losses[0] + losses[1]).detach()) / 2, rel=1e-5)
    assert logged["weights"] == {"toy": 1.0}


def test_no_clipping_with_grad_clip_zero(monkeypatch, tmp_path, tiny_models, data_dir):
    import copy

    config, task, model = tiny_setup(tiny_models, data_dir, dropout=False)
    batch = TaskBatches(task).at(0).rows
    start = copy.deepcopy(model)
    expected = gradient_of(start, task.loss(start("toy", batch), batch))
    step = FirstStep(monkeypatch)
    train = TrainConfig(max_steps=1, batch_size=8, precision="fp32", progress=False, patience=0, grad_clip=0.0)
    run_stage(Stage(name="s", tasks=[("toy", "classification", {})]), model, {"toy": task}, train,
              make_accelerator("fp32"), tmp_path / "stage", RunLog(tmp_path), progress=False)
    for name, gradient in step.stepped.items():
        assert torch.allclose(gradient, expected[name], atol=1e-5), name


def test_r3f_adds_its_penalty_to_the_loss_the_step_descends(monkeypatch, tmp_path, tiny_models, data_dir):
    import copy

    from tartan.training.r3f import r3f_penalty

    config, task, model = tiny_setup(tiny_models, data_dir, dropout=False)
    batch = TaskBatches(task).at(0).rows
    start = copy.deepcopy(model)
    r3f = {"eps": 0.5, "noise": "normal", "weight": 3.0}
    torch.manual_seed(5)  # the loop's first random draw is the step's noise
    output = start("toy", batch)
    penalty = r3f_penalty(start, task, batch, output, **r3f)
    assert penalty.item() > 1e-4
    expected = gradient_of(start, task.loss(output, batch) + penalty)
    step = FirstStep(monkeypatch)
    train = TrainConfig(max_steps=1, batch_size=8, precision="fp32", progress=False, patience=0, grad_clip=0.0)
    torch.manual_seed(5)
    run_stage(Stage(name="s", tasks=[("toy", "classification", {})], r3f=r3f), model, {"toy": task}, train,
              make_accelerator("fp32"), tmp_path / "stage", RunLog(tmp_path), progress=False)
    for name, gradient in step.left.items():
        assert torch.allclose(gradient, expected[name], atol=1e-5), name


def test_a_stage_counts_the_tokens_of_every_batch_it_trained_on_and_its_time(tiny_models, data_dir, tmp_path):
    import time

    config, task, model = tiny_setup(tiny_models, data_dir)
    train = TrainConfig(max_steps=5, batch_size=8, precision="fp32", progress=False, patience=0, log_every=2)
    started = time.perf_counter()
    state = run_stage(Stage(name="s", tasks=[("toy", "classification", {})]), model, {"toy": task}, train,
                      make_accelerator("fp32"), tmp_path / "stage", RunLog(tmp_path), progress=False)
    elapsed = time.perf_counter() - started
    batches = TaskBatches(task)
    assert state.train_tokens == sum(int(batches.at(n).rows["attention_mask"].sum()) for n in range(5))
    assert 0 < state.train_seconds <= state.wall_seconds <= elapsed
    steps = [r for r in RunLog(tmp_path).records() if "loss" in r]
    # logged every 2 steps and at the last; epochs counted in the end task's 6 batches
    assert [r["step"] for r in steps] == [2, 4, 5]
    assert [r["epoch"] for r in steps] == pytest.approx([2 / 6, 4 / 6, 5 / 6])
    assert all(r["tokens_per_second"] > 0 and r["loss"]["toy"] > 0 for r in steps)
    # the rate the logged step used: int(0.06 x 5) = 0 warm-up steps, so step k (from 0) runs at (5 - k) / 5
    assert [r["lr"] for r in steps] == pytest.approx([1e-4 * 4 / 5, 1e-4 * 2 / 5, 1e-4 * 1 / 5])


def test_selecting_on_the_mean_averages_the_tasks_that_have_a_dev_split():
    from types import SimpleNamespace

    from tartan.training.loop import evaluate_stage

    def task(value, splits=("train", "dev")):
        return SimpleNamespace(metric="accuracy", splits=list(splits), eval_batches=lambda split: [0],
                               eval_outputs=lambda model, split, numbers, autocast: value,
                               eval_metrics=lambda split, outputs: {"accuracy": outputs[0], "loss": 1.0})

    tasks = {"a": task(0.2), "b": task(0.6), "c": task(0.9, splits=("train",))}
    accelerator = make_accelerator("fp32")
    stage = Stage(name="s", tasks=[(n, "classification", {}) for n in tasks], select_on="mean")
    dev, value = evaluate_stage(stage, tasks, None, accelerator)
    assert value == pytest.approx(0.4) and dev["mean"] == value and set(dev["tasks"]) == {"a", "b"}
    end_task = Stage(name="s", tasks=[(n, "classification", {}) for n in ("b", "a")])
    assert evaluate_stage(end_task, tasks, None, accelerator) == ({"accuracy": 0.6, "loss": 1.0}, 0.6)


def test_a_checkpoint_between_evaluations_is_due_after_the_minutes_set(monkeypatch):
    import tartan.training.loop as loop

    monkeypatch.setattr(loop.time, "monotonic", lambda: 1000.0)
    assert not loop._checkpoint_due(0.0, None)
    assert loop._checkpoint_due(1000.0 - 120, 2) and not loop._checkpoint_due(1000.0 - 119, 2)
    assert loop._checkpoint_due(1000.0, 0)


def test_a_checkpoint_between_evaluations_moves_the_resume_state_not_the_best_weights(monkeypatch, tmp_path,
                                                                                      tiny_models, data_dir):
    import tartan.training.loop as loop

    saves = []
    real_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a, **k: (saves.append(k["best_is_current"]), real_save(*a, **k)))
    curve = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5]
    # checkpoint_minutes 0: due after every step; killed before the evaluation at step 4
    killed = ScriptedDev({"s": curve}, fail_at={"s": 1})
    with pytest.raises(Interrupted):
        run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, killed, checkpoint_minutes=0)
    assert saves == [False, True, False]  # timed at 1, the evaluation at 2 (best), timed at 3
    resumed = ScriptedDev({"s": curve[1:]})
    state, model = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, resumed, checkpoint_minutes=0)
    assert state.best_step == 2 and same_weights(model, killed.weights["s"][0])
    saves.clear()
    # without timed checkpoints, one save per evaluation
    (tmp_path / "again").mkdir()
    run_scripted(monkeypatch, tmp_path / "again", tiny_models, data_dir, ScriptedDev({"s": curve}), checkpoint_minutes=None)
    assert saves == [True, False, False, False, False, False]


def test_a_resumed_stage_logs_the_losses_an_uninterrupted_one_logs(monkeypatch, tmp_path, tiny_models, data_dir):
    # evaluations (checkpoints) at 3, 6, 9; log lines at 4, 8, 12: killed before the evaluation at 6,
    # the stage resumes at 3, and its line at 4 must average steps 1-4, not 4 alone
    options = {"eval_every": 3, "log_every": 4}
    curve = [0.1, 0.2, 0.3, 0.4]

    def logged(folder) -> list[tuple[int, dict]]:
        return [(r["step"], r["loss"]) for r in RunLog(folder).records() if "loss" in r]

    (tmp_path / "whole").mkdir()
    run_scripted(monkeypatch, tmp_path / "whole", tiny_models, data_dir, ScriptedDev({"s": curve}), **options)
    (tmp_path / "killed").mkdir()
    with pytest.raises(Interrupted):
        run_scripted(monkeypatch, tmp_path / "killed", tiny_models, data_dir,
                     ScriptedDev({"s": curve}, fail_at={"s": 1}), **options)
    run_scripted(monkeypatch, tmp_path / "killed", tiny_models, data_dir, ScriptedDev({"s": curve[1:]}), **options)
    assert [step for step, _ in logged(tmp_path / "whole")] == [4, 8, 12]
    assert logged(tmp_path / "killed") == logged(tmp_path / "whole")


def fake_clock(monkeypatch):
    """Every reading of the loop's perf_counter is half a second after the last."""
    import itertools
    import time as real_time
    from types import SimpleNamespace

    import tartan.training.loop as loop

    ticks = itertools.count()
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(ticks) / 2,
                                                      monotonic=real_time.monotonic))


def test_a_stage_times_its_steps_and_evaluations_apart(monkeypatch, tmp_path, tiny_models, data_dir):
    fake_clock(monkeypatch)
    dev = ScriptedDev({"s": [0.1, 0.2, 0.3]})
    state, _ = run_scripted(monkeypatch, tmp_path, tiny_models, data_dir, dev, max_steps=5, eval_every=2, log_every=2)
    # a step is read twice (start, end): 0.5 s each; so is an evaluation, at 2, 4 and 5
    assert state.train_seconds == 2.5 and state.wall_seconds == 4.0
    _, task, _ = tiny_setup(tiny_models, data_dir)
    batches = TaskBatches(task)
    tokens = [int(batches.at(n).rows["attention_mask"].sum()) for n in range(5)]
    logged = [r for r in RunLog(tmp_path).records() if "loss" in r]
    assert [r["tokens_per_second"] for r in logged] == pytest.approx([sum(tokens[:2]) / 1, sum(tokens[2:4]) / 1,
                                                                      tokens[4] / 0.5])


def test_warm_up_takes_its_share_of_the_stages_steps(tiny_models, data_dir, tmp_path):
    config, task, model = tiny_setup(tiny_models, data_dir)
    train = TrainConfig(max_steps=5, batch_size=8, precision="fp32", progress=False, patience=0, log_every=1,
                        warmup=0.4, lr_body=1e-4)
    run_stage(Stage(name="s", tasks=[("toy", "classification", {})]), model, {"toy": task}, train,
              make_accelerator("fp32"), tmp_path / "stage", RunLog(tmp_path), progress=False)
    rates = [r["lr"] for r in RunLog(tmp_path).records() if "loss" in r]
    # int(0.4 x 5) = 2 warm-up steps rising as (k + 1) / 3, then (5 - k) / 3
    assert rates == pytest.approx([1e-4 / 3, 2e-4 / 3, 3e-4 / 3, 2e-4 / 3, 1e-4 / 3])


def test_a_head_whose_task_is_not_drawn_in_a_step_does_not_move(monkeypatch, tmp_path, tiny_models, data_dir):
    # AdamW skips a parameter without a gradient; a zeroed gradient would still move it by momentum
    from tartan.tasks.classification import ClassificationTask

    config, toy, model = build_multitask(tiny_models["bert"], data_dir, heads=("toy", "toy_pairs"))
    from transformers import AutoTokenizer

    pairs = ClassificationTask.from_config("toy_pairs", config, AutoTokenizer.from_pretrained(tiny_models["bert"]))
    import tartan.training.loop as loop

    snapshots = []
    make_optimizer_ = loop.make_optimizer

    def make(model, train):
        optimizer = make_optimizer_(model, train)
        optimizer.register_step_post_hook(lambda *_: snapshots.append(model.heads["toy"].dense.weight.detach().clone()))
        return optimizer

    monkeypatch.setattr(loop, "make_optimizer", make)
    # one batch an update, one task's epoch after the other's: toy for its 6 batches, then toy_pairs
    stage = Stage(name="s", tasks=[("toy", "classification", {}), ("toy_pairs", "classification", {})],
                  weighting="sum", sampling="dataset_homogeneous", sampling_options={"tasks_per_update": 1})
    train = TrainConfig(max_steps=8, batch_size=8, precision="fp32", progress=False, patience=0)
    run_stage(stage, model, {"toy": toy, "toy_pairs": pairs}, train, make_accelerator("fp32"), tmp_path / "stage",
              RunLog(tmp_path), progress=False)
    assert not torch.equal(snapshots[4], snapshots[5])  # step 6 drew toy
    assert torch.equal(snapshots[5], snapshots[6]) and torch.equal(snapshots[6], snapshots[7])


def test_accumulated_micro_batches_make_the_update_of_one_batch_that_large(monkeypatch, tmp_path, tiny_models,
                                                                        data_dir):
    import copy

    import numpy as np

    # micro-batches of 4, accumulated twice: the gradient (before clipping) and the step are those of
    # one batch of the same 8 rows
    config, task, model = build_multitask(tiny_models["bert"], data_dir, batch_size=4)
    start = copy.deepcopy(model)
    epoch = task.train_batches(0)
    whole = task.collate("train", np.concatenate([epoch[0], epoch[1]]))
    expected = gradient_of(start, task.loss(start("toy", whole), whole))
    step = FirstStep(monkeypatch)
    clip = 0.5
    assert norm(expected) > 2 * clip
    train = TrainConfig(max_steps=1, batch_size=4, accumulate=2, precision="fp32", progress=False, patience=0,
                        grad_clip=clip, warmup=0.0, log_every=1, lr_body=1e-3, lr_head=1e-3, weight_decay=0.0)
    run_stage(Stage(name="s", tasks=[("toy", "classification", {})]), model, {"toy": task}, train,
              make_accelerator("fp32"), tmp_path / "stage", RunLog(tmp_path), progress=False)
    assert set(step.left) == set(expected)
    for name, gradient in step.left.items():
        assert torch.allclose(gradient, expected[name], atol=1e-5), name
    # the step itself: AdamW on the gradient the loop left, clipped, from the same weights. Not on the
    # whole batch's gradient recomputed: Adam's first step is about lr * g / (|g| + eps), so an entry
    # near eps turns summation-order rounding (which differs from CPU to CPU) into a visible step
    reference = copy.deepcopy(start)
    optimizer = make_optimizer(reference, train)
    for name, p in reference.named_parameters():
        p.grad = step.left[name].clone() if name in step.left else None
    torch.nn.utils.clip_grad_norm_(list(reference.parameters()), clip)
    assert set(step.stepped) == set(step.left)
    for name, gradient in step.stepped.items():
        assert torch.allclose(gradient, reference.get_parameter(name).grad, rtol=1e-5, atol=1e-9), name
    optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    # an epoch of 12 micro-batches is 6 steps
    logged = next(r for r in RunLog(tmp_path).records() if "loss" in r)
    assert logged["epoch"] == pytest.approx(1 / 6)


def test_shares_weigh_micro_batches_by_their_loss_units():
    from tartan.training.loop import HostBatch, set_shares

    # masked-LM micro-batches with 3 and 5 masked tokens: each mean loss weighs by its share of the 8,
    # so that the sum is the mean over all 8 tokens, as one batch of both would give
    micro = [[HostBatch("mlm", {}, 10, 3, 3)], [HostBatch("mlm", {}, 10, 5, 5)]]
    set_shares(micro, world=1)
    assert [m[0].share for m in micro] == [pytest.approx(3 / 8), pytest.approx(5 / 8)]
    # two processes, this one holding 2 of a micro-batch's 3 tokens and 1 of the other's 5
    micro = [[HostBatch("mlm", {}, 10, 2, 3)], [HostBatch("mlm", {}, 10, 1, 5)]]
    set_shares(micro, world=2)
    assert [m[0].share for m in micro] == [pytest.approx(2 * 2 / 8), pytest.approx(2 * 1 / 8)]
    # drawn twice in one step without accumulation: both batches' losses count in full
    micro = [[HostBatch("a", {}, 10, 4, 4), HostBatch("a", {}, 10, 4, 4), HostBatch("b", {}, 10, 4, 4)]]
    set_shares(micro, world=1)
    assert [b.share for b in micro[0]] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("prefetch", [0, 3])
def test_prefetching_changes_no_batch_and_no_step(tmp_path, tiny_models, data_dir, prefetch):
    # the steps trained with batches prepared ahead (or not) are those trained without: same weights
    results = []
    for depth in (prefetch, 1):
        _, task, model = build_multitask(tiny_models["bert"], data_dir)
        train = TrainConfig(max_steps=5, batch_size=8, precision="fp32", progress=False, patience=0,
                            prefetch=depth)
        run_stage(Stage(name="s", tasks=[("toy", "classification", {})]), model, {"toy": task}, train,
                  make_accelerator("fp32"), tmp_path / f"stage{depth}-{len(results)}", RunLog(tmp_path),
                  progress=False)
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert all(torch.equal(results[0][n], results[1][n]) for n in results[0])


@pytest.mark.parametrize("weighting", ["static", "meta"])
def test_fp16_scales_the_losses_and_unscales_the_gradients_it_steps_on(weighting, tmp_path, tiny_models, data_dir):
    # on this CPU autocast leaves fp16 alone, so only the loss scaler differs from fp32: scaling by a
    # power of two and back changes no bit, and the runs must end with the same weights
    import json

    results = {}
    for precision in ("fp32", "fp16"):
        _, task, model = build_multitask(tiny_models["bert"], data_dir, heads=("toy", "toy_too"))
        stage = Stage(name="s", tasks=[("toy", "classification", {}), ("toy_too", "classification", {})],
                      weighting=weighting, weighting_options={"head": "same"} if weighting == "meta" else {})
        train = TrainConfig(max_steps=3, batch_size=8, precision=precision, progress=False, patience=0)
        toy_too = copy_task(task, "toy_too")
        run_stage(stage, model, {"toy": task, "toy_too": toy_too}, train, make_accelerator(precision, "cpu"),
                  tmp_path / precision, RunLog(tmp_path), progress=False)
        results[precision] = {n: p.detach().clone() for n, p in model.named_parameters()}
        saved = json.loads((tmp_path / precision / "last" / "state.json").read_text())
        assert ("scaler" in saved) == (precision == "fp16")
        if precision == "fp16":
            assert saved["scaler"]["scale"] == 65536.0  # no overflow, no step skipped
    assert all(torch.allclose(results["fp16"][n], results["fp32"][n], atol=1e-6) for n in results["fp32"])


def copy_task(task, name: str):
    """The same classification task under another name (a second head to weigh)."""
    import copy

    other = copy.copy(task)
    other.name = name
    return other


def test_the_body_schedule_starts_after_the_head_warm_up_and_the_heads_keep_theirs():
    body, head = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [body], "part": "body"}, {"params": [head], "part": "heads"}], lr=1.0)
    schedule = linear_schedule(optimizer, warmup_steps=1, total_steps=6, body_start=3)
    rates = []
    for _ in range(6):
        rates.append(schedule.get_last_lr())
        optimizer.step()
        schedule.step()
    assert [body for body, _ in rates] == pytest.approx([0, 0, 0, 0.5, 1.0, 0.5])  # 3 steps from step 3
    assert [head for _, head in rates] == pytest.approx([0.5, 1.0, 0.8, 0.6, 0.4, 0.2])


@pytest.mark.parametrize("weighting", ["static", "meta"])
def test_head_warm_up_trains_the_heads_alone_then_the_body(weighting, monkeypatch, tiny_models, data_dir, tmp_path):
    ScriptedDev({"s": [0.1, 0.2]}).install(monkeypatch)  # each evaluation better: the last weights are kept
    config, task, model = tiny_setup(tiny_models, data_dir)
    other = copy_task(task, "other")
    model.heads["other"] = other.make_head(model.body)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = TrainConfig(max_steps=3, batch_size=8, precision="fp32", progress=False, patience=0, log_every=1,
                        head_warmup_steps=3)
    stage = Stage(name="s", tasks=[("toy", "classification", {}), ("other", "classification", {})],
                  weighting=weighting, weighting_options={"head_steps": 2} if weighting == "meta" else {})
    run_stage(stage, model, {"toy": task, "other": other}, train, make_accelerator("fp32"), tmp_path / "stage",
              RunLog(tmp_path), progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("body."))
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("out_proj.weight"))
    assert all(r.get("head_warmup") for r in RunLog(tmp_path).records() if "loss" in r)
    # two more steps: the body moves once the warm-up is over
    more = TrainConfig(max_steps=5, batch_size=8, precision="fp32", progress=False, patience=0, log_every=1,
                       head_warmup_steps=3)
    run_stage(stage, model, {"toy": task, "other": other}, more, make_accelerator("fp32"), tmp_path / "stage",
              RunLog(tmp_path), progress=False)
    assert not torch.equal(before["body.embeddings.word_embeddings.weight"],
                           model.state_dict()["body.embeddings.word_embeddings.weight"])


def test_head_warm_up_of_a_tied_masked_lm_decoder_leaves_the_word_embeddings_alone(tiny_models, data_dir, tmp_path):
    from tartan.config import load_config
    from tartan.models.body import load_body
    from tartan.tasks.mlm import MaskedLMTask

    config = load_config(None, [f"model={tiny_models['bert']}", f"data_dir={data_dir}", "end_task=toy",
                                "data.max_length=32"])
    body, tokenizer = load_body(str(tiny_models["bert"]))
    tapt = MaskedLMTask.from_config("tapt", config, tokenizer, source="task", batch_size=8, seed=0)
    from tartan.models.multitask import MultiTaskModel
    model = MultiTaskModel(body, {"tapt": tapt.make_head(body)})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = TrainConfig(max_steps=2, batch_size=8, precision="fp32", progress=False, patience=0,
                        head_warmup_steps=2)
    run_stage(Stage(name="tapt", tasks=[("tapt", "mlm", {})]), model, {"tapt": tapt}, train, make_accelerator("fp32"),
              tmp_path / "stage", RunLog(tmp_path), progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("body."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("heads."))
