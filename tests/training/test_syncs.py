"""A training step never waits on the host: a few steps of every weighting strategy, with the
operations that would make a GPU wait counted on this CPU (tartan.training.syncs), and tartan's own
reads counted through the one helper they all go through (training.device.to_host). Where CUDA
exists, the same steps also run under torch.cuda.set_sync_debug_mode("error")."""
from __future__ import annotations

import pytest
import torch

import tartan.training.loop as loop
from tartan.config import load_config
from tartan.methods import Stage, methods
from tartan.models.multitask import MultiTaskModel
from tartan.models.body import load_body
from tartan.rundir import RunLog
from tartan.run import build_task
from tartan.training.device import HostReads, make_accelerator
import tartan.weighting.meta as meta
from tartan.training.syncs import StepMarks, SyncCounter, allowed, arm_between_steps

from helpers import recipe, tiny_overrides

# batches prepared ahead on a thread, as on a GPU: collation is host work the counter does not see there
SHORT = {"domain.path": "toy_pairs/train.jsonl", "multitask.auxiliary_batch_size": 4, "meta.dev_batch_size": 8,
         "train.log_every": 1000, "train.eval_every": 1000, "train.prefetch": 2}
STEPS = 5
# per strategy: the recipe and overrides of its stage, and the reads of steps 2 to 5 (META reads its
# cosines and meta-head losses once per update)
STRATEGIES = {
    "static": ("mt_tartan", {}, [0, 0, 0, 0]),
    "meta": ("meta_tartan", {}, [1, 1, 1, 1]),
    "meta, same head": ("meta_tartan_same_head", {}, [1, 1, 1, 1]),
    "meta, other head batch": ("meta_tartan", {"meta.head_batch": "other"}, [1, 1, 1, 1]),
    "meta, update_every=2": ("meta_tartan", {"meta.update_every": 2}, [0, 1, 0, 1]),
    "meta, accumulate=2": ("meta_tartan", {"train.accumulate": 2}, [1, 1, 1, 1]),
    "sum": (None, {}, [0, 0, 0, 0]),
}


def build_stage(name: str, tiny_models, data_dir, tmp_path, device: str = "cpu"):
    recipe_name, extra, _ = STRATEGIES[name]
    config = load_config(recipe(recipe_name or "mt_tartan"),
                         tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **SHORT, **extra,
                                        device=device))
    if recipe_name is None:  # MUPPET's update: 3 draws over two labelled tasks, summed
        stage = Stage(name="sum", tasks=[("toy", "classification", {}), ("toy_pairs", "classification", {})],
                      weighting="sum", sampling="heterogeneous", sampling_options={"tasks_per_update": 3})
    else:
        stage = methods.get(config.method)(config)[0]
    body, tokenizer = load_body(config.model)
    tasks = {task: build_task(task, kind, options, config, tokenizer) for task, kind, options in stage.tasks}
    torch.manual_seed(0)
    model = MultiTaskModel(body, {task: t.make_head(body) for task, t in tasks.items()})
    return config, stage, tasks, model


def run_counted(name, tiny_models, data_dir, tmp_path, monkeypatch) -> StepMarks:
    config, stage, tasks, model = build_stage(name, tiny_models, data_dir, tmp_path)
    counter = SyncCounter()
    marks = StepMarks(counter, lambda: HostReads.count)
    make_optimizer = loop.make_optimizer
    monkeypatch.setattr(loop, "make_optimizer", lambda *a, **k: marks.attach(make_optimizer(*a, **k)))
    train = loop.dataclasses.replace(config.train, max_steps=STEPS)
    with counter:  # collation runs on the prefetching thread, which the counter does not see
        loop.run_stage(stage, model, tasks, train, make_accelerator("fp32", "cpu"), tmp_path / "stage",
                       RunLog(tmp_path), progress=False)
    return marks


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_step_reads_nothing_from_the_device_but_what_it_must(name, tiny_models, data_dir, tmp_path, monkeypatch):
    marks = run_counted(name, tiny_models, data_dir, tmp_path, monkeypatch)
    assert len(marks.marks) == STEPS
    assert marks.reads_per_step() == STRATEGIES[name][2]
    # nothing else: no value read into Python, no copy to the host, no shape decided by values
    assert marks.syncs_per_step() == STRATEGIES[name][2], marks.kinds()


def test_the_counter_sees_what_would_wait_on_a_gpu():
    # so that a count of zero above means something
    counter = SyncCounter()
    x = torch.arange(6.0)
    with counter:
        float(x.sum())
        x[x > 2].sum()
        x.nonzero()
        with counter.paused():
            int(x[0])
    assert counter.counts["aten._local_scalar_dense.default"] == 1
    assert counter.counts["boolean-mask indexing"] == 1 and counter.counts["aten.nonzero.default"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: set_sync_debug_mode checks a GPU's syncs")
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_no_step_synchronises_with_the_gpu(name, tiny_models, data_dir, tmp_path, monkeypatch):
    config, stage, tasks, model = build_stage(name, tiny_models, data_dir, tmp_path, device="cuda")
    accelerator = make_accelerator("auto", "cuda")
    model.to(accelerator.device)
    marks = StepMarks(SyncCounter(), lambda: HostReads.count)
    make_optimizer = loop.make_optimizer
    monkeypatch.setattr(loop, "make_optimizer",
                        lambda *a, **k: arm_between_steps(marks.attach(make_optimizer(*a, **k)), STEPS))
    monkeypatch.setattr(meta, "to_host", allowed(meta.to_host))  # the one read META must make
    train = loop.dataclasses.replace(config.train, max_steps=STEPS, log_every=1000)
    try:
        loop.run_stage(stage, model, tasks, train, accelerator, tmp_path / "stage", RunLog(tmp_path), progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert marks.reads_per_step() == STRATEGIES[name][2]
