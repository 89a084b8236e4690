"""Host syncs per training step, per weighting strategy: how often a step would make a GPU wait for
the host. Counted on any device with tartan.training.syncs.SyncCounter (values read into Python,
copies to the CPU, operations whose output shape depends on values), collation left out since it is
host work; plus tartan's own reads through `training.device.to_host` where this tartan has it.

    python benchmarks/host_syncs.py [--data-dir ../shared/data] [--steps 4] [--device auto]

On a GPU every step after the first also runs under torch.cuda.set_sync_debug_mode("error"), META's
one read per update allowed: a sync raises, and is reported as the strategy's error. Runs against
whichever tartan is imported: PYTHONPATH=OLD_CHECKOUT counts an older one (its
.tolist() of META's cosines is not seen: a CPU tensor's tolist does not dispatch). The last line
printed is one JSON object: per strategy, the syncs of each step after the first (the first also
builds things; the last step's evaluation comes after it) and their kinds.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

import tartan.training.loop as loop
from tartan.config import load_config
from tartan.methods import methods
from tartan.models.body import accepts_token_types, load_body
from tartan.models.multitask import MultiTaskModel
from tartan.rundir import RunLog
from tartan.run import build_task, make_accelerator

ROOT = Path(__file__).resolve().parents[1]
# torch only: loaded from this checkout's file, so that an older tartan on the path is counted too
_spec = importlib.util.spec_from_file_location("tartan_syncs", ROOT / "tartan" / "training" / "syncs.py")
syncs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(syncs)

STRATEGIES = {  # name -> recipe, overrides
    "static (mt_tartan)": ("mt_tartan", []),
    "meta (meta_tartan)": ("meta_tartan", []),
    "meta, same head": ("meta_tartan_same_head", []),
    "meta, update_every=2": ("meta_tartan", ["meta.update_every=2"]),
    "sum (muppet)": ("muppet", ["muppet.tasks=[sci_cite,chemprot]", "muppet.max_steps={steps}"]),
}


def host_reads() -> int:
    try:
        from tartan.training.device import HostReads
    except ImportError:  # a tartan before to_host
        return 0
    return HostReads.count


def count(recipe: str, overrides: list[str], data_dir: str, steps: int, device: str) -> dict:
    extra = [f"device={device}"] if "device" in load_config(None).to_dict() else []
    config = load_config(ROOT / "recipes" / f"{recipe}.yaml",
                         [f"data_dir={data_dir}", "train.progress=false", f"train.eval_every={10 ** 9}",
                          "train.log_every=1000", f"train.max_steps={steps}", *extra,
                          *[o.format(steps=steps) for o in overrides]])
    stage = methods.get(config.method)(config)[0]
    body, tokenizer = load_body(config.model, config.trust_remote_code, config_overrides=config.model_config)
    tasks = {name: build_task(name, kind, options, config, tokenizer) for name, kind, options in stage.tasks}
    torch.manual_seed(0)
    model = MultiTaskModel(body, {name: task.make_head(body) for name, task in tasks.items()},
                           token_types=accepts_token_types(body))
    section = getattr(config, stage.train_section)
    accelerator = make_accelerator(section.precision, *([config.device] if extra else []))
    model.to(accelerator.device)
    counter = syncs.SyncCounter()

    def paused(function):
        def run(*args, **kwargs):
            with counter.paused():
                return function(*args, **kwargs)
        return run

    # collation is host work, whichever thread does it (with the counts taken from it on the host)
    for task in tasks.values():
        for method in ("collate", "host_fields"):
            if hasattr(task, method):
                setattr(task, method, paused(getattr(task, method)))
    batches_at = loop.TaskBatches.at
    loop.TaskBatches.at = paused(batches_at)
    marks = syncs.StepMarks(counter, host_reads)
    make_optimizer = loop.make_optimizer
    strict = accelerator.device.type == "cuda"

    def counted(*args, **kwargs):
        optimizer = marks.attach(make_optimizer(*args, **kwargs))
        # on a GPU, any sync inside steps 2 to `steps` raises, but META's one read per update
        return syncs.arm_between_steps(optimizer, steps) if strict else optimizer

    loop.make_optimizer = counted
    import tartan.weighting.meta as meta
    meta_read = getattr(meta, "to_host", None)
    if strict and meta_read is not None:
        meta.to_host = syncs.allowed(meta_read)
    try:
        section = loop.dataclasses.replace(section, max_steps=steps)
        with tempfile.TemporaryDirectory() as tmp, counter:
            loop.run_stage(stage, model, tasks, section, accelerator, Path(tmp) / "stage", RunLog(Path(tmp)),
                           progress=False)
    except RuntimeError as error:  # what set_sync_debug_mode("error") raises on a sync
        return {"error": str(error).splitlines()[0], "syncs_per_step": marks.syncs_per_step()}
    finally:
        loop.make_optimizer = make_optimizer
        loop.TaskBatches.at = batches_at
        if meta_read is not None:
            meta.to_host = meta_read
        if strict:
            torch.cuda.set_sync_debug_mode("default")
    return {"syncs_per_step": marks.syncs_per_step(), "to_host_reads_per_step": marks.reads_per_step(),
            "kinds": marks.kinds()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", action="append", default=[], help="strategies to count (default: all)")
    args = parser.parse_args()
    result = {}
    for name, (recipe, overrides) in STRATEGIES.items():
        if args.only and name not in args.only:
            continue
        result[name] = count(recipe, overrides, args.data_dir, args.steps, args.device)
        print(f"{name}: syncs per step {result[name]['syncs_per_step']} ({result[name]['kinds']})", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
