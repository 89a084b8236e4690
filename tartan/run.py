"""A run end to end: config -> data and model (all input checked before anything is written) ->
the method's stages through the one loop -> the run directory of DESIGN.md."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accelerate.utils import set_seed

from . import rundir
from .config import Config, cache_dir, default_data_dir, load_config, save_config, with_defaults
from .data.labelled import check_task_name
from .errors import TartanError, first_line
from .methods import Stage, methods
from .models.body import (
    absolute_model,
    accepts_token_types,
    load_body,
    max_positions,
    resolve_model_path,
)
from .models.heads import load_head_weights, save_head
from .models.multitask import MultiTaskModel
from .rundir import RunLog, write_json_atomic, write_text_atomic
from .tasks import task_types
from .training.checkpoint import best_weights, checkpoint_state
from .training.device import make_accelerator, processes, resolve_device, resolve_precision
from .training.distributed import on_main
from .training.evaluation import evaluate
from .training.loop import run_stage
from .weighting import strategies


PRECISION_SECTIONS = ("train", "pretrain", "muppet")


def resolve(config: Config) -> Config:
    """Fill the defaults that depend on the environment, so that config.yaml reproduces the run."""
    if config.data_dir is None:
        config.data_dir = str(default_data_dir())
    check_task_name(config.end_task)  # before it names the run directory
    if config.output_dir is None:
        config.output_dir = str(Path("runs") / config.name / config.end_task / f"seed{config.seed}")
    # absolute and normalised ("a/../b" -> "b"), so that the run directory works from any working
    # directory and the same place spelled two ways is the same config; symlinks are kept as named
    config.data_dir = os.path.abspath(os.path.expanduser(config.data_dir))
    config.output_dir = os.path.abspath(os.path.expanduser(config.output_dir))
    config.model = absolute_model(config.model)
    # precision: auto is recorded as what it means on this device, so that the run's config says how
    # it trained; on a device without bf16 such a run is read back if finished, but not resumed
    # (finished_result). Silent: a bf16 asked for is said to fall back only once it trains (train)
    device = resolve_device(config.device)
    for section in PRECISION_SECTIONS:
        getattr(config, section).precision = resolve_precision(getattr(config, section).precision, device, warn=False)
    return config


def build_task(name: str, kind: str, options: dict, config: Config, tokenizer):
    """A task of the registered type `kind`, its data read and checked."""
    return task_types.get(kind).from_config(name, config, tokenizer, **options)


def train(config: Config, force: bool = False) -> dict:
    """Train (or resume, or return the finished result of) the run `config` describes."""
    requested_precision = {section: getattr(config, section).precision for section in PRECISION_SECTIONS}
    config = resolve(config)
    device = resolve_device(config.device)
    code = code_version()  # now: the code may change on disk while a long run trains
    run_dir = Path(config.output_dir)
    rundir.check_writable_folder(run_dir)
    # tokens and shared stages are stored there: a one-line error now, not a traceback after a stage
    rundir.check_writable_folder(cache_dir(), "the cache folder (TARTAN_CACHE)")
    resolved = save_config(config)
    finished = run_dir / rundir.METRICS
    existing = run_dir / rundir.CONFIG
    # the main process reads the run directory and decides for all: finished, or another config there
    processes_state = processes(device)
    prior = on_main(lambda: finished_result(config, run_dir, device, requested_precision) if not force else None,
                    processes_state)
    if prior is not None:
        print(f"{run_dir}: finished already (--force retrains)", file=sys.stderr)
        return prior
    if processes_state.is_main_process and "bf16" in requested_precision.values():
        resolve_precision("bf16", device)  # said once, however many sections and processes ask for it

    stages: list[Stage] = methods.get(config.method)(config)
    body, tokenizer = load_body(config.model, config.trust_remote_code, config_overrides=config.model_config)
    limit = max_positions(body, tokenizer)
    if config.data.max_length > limit:
        raise TartanError(f"data.max_length={config.data.max_length} is longer than model {config.model!r} "
                          f"can read ({limit} tokens)")
    # a text pair needs its special tokens and a token of each text
    shortest = tokenizer.num_special_tokens_to_add(pair=True) + 2
    if config.data.max_length < shortest:
        raise TartanError(f"data.max_length={config.data.max_length} leaves no room for text: the tokenizer of "
                          f"{config.model!r} adds {shortest - 2} special tokens to a text pair (at least {shortest})")
    tasks, kinds = {}, {}
    for stage in stages:
        for name, kind, options in stage.tasks:
            if name in kinds and kinds[name] != kind:  # a task folder named as the run's TAPT or DAPT objective
                raise TartanError(f"task {name!r} would be both a {kinds[name]} and a {kind} task of this run: "
                                  "rename its folder in data_dir")
            if name not in tasks:
                tasks[name], kinds[name] = build_task(name, kind, options, config, tokenizer), kind
    end_task = tasks[config.end_task]
    if config.metric is not None:
        metrics = getattr(type(end_task), "metrics", ())
        if config.metric not in metrics:
            raise TartanError(f"metric={config.metric}: end task {config.end_task!r} ({kinds[config.end_task]}) is "
                              f"scored by {', '.join(metrics) or 'none of them'}")
        end_task.metric = config.metric
    for task in tasks.values():
        task.make_head(body)  # a head the body cannot carry is bad input too: find out before writing
    for stage in stages:  # and so are weighting options that do not fit the stage's tasks
        strategies.get(stage.weighting)(stage.task_names, config.end_task, **stage.weighting_options)

    # every input is read and checked: only now is anything written, by the main process only
    if processes_state.is_main_process:
        if force and run_dir.exists():
            for name in (rundir.METRICS, rundir.LOG, rundir.WEIGHTS, rundir.MODEL, rundir.HEADS, rundir.CHECKPOINT):
                target = run_dir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        rundir.make_folder(run_dir)
        write_text_atomic(existing, resolved)
    processes_state.wait_for_everyone()

    model = MultiTaskModel(body, {}, token_types=accepts_token_types(body))
    log = RunLog(run_dir, enabled=True)
    started = time.time()
    stage_results = {}
    previous_key = ""
    for stage in stages:
        section = getattr(config, stage.train_section)
        stage_seed = section.seed if stage.reusable else config.seed
        set_seed(stage_seed)
        accelerator = make_accelerator(section.precision, device)
        log.enabled = accelerator.is_main_process
        # heads are made when their stage starts, under the stage's seed: a reused stage computes
        # the same, whichever run computed it first
        for name in stage.task_names:
            if name not in model.heads:
                model.heads[name] = tasks[name].make_head(model.body).to(accelerator.device)
                if stage.head_init.get(name) in model.heads:
                    model.heads[name].load_state_dict(model.heads[stage.head_init[name]].state_dict())
        model.to(accelerator.device)
        train_settings = stage_train_settings(config, stage)
        stored = None
        if stage.reusable:
            previous_key = stage_key(config, stage, tasks, previous_key)
            stored = cache_dir() / "stages" / f"{stage.name}-{previous_key[:24]}"
        # a run that needs a stage another run (another sweep worker, another command) is computing
        # waits for it and reuses it, rather than computing it a second time beside it
        with rundir.exclusive(stored.with_name(f".{stored.name}.lock") if stored else None,
                              enabled=stored is not None and processes_state.is_main_process):
            processes_state.wait_for_everyone()
            # whether the stage is stored, what it holds and whether this run stored it: the main
            # process's reading, in every process
            reused = on_main(lambda: stored_stage(stored, run_dir / rundir.CHECKPOINT / stage.name / "last"),
                             processes_state) if stored is not None else None
            if reused is not None:
                result, computed_here = reused
                load_stage(stored, model, stage)
                if computed_here:
                    # this run computed and stored the stage, then was killed: its log and its time stand
                    stage_results[stage.name] = result
                else:
                    stage_results[stage.name] = {**result, "reused": str(stored)}
                    log.drop_after(stage.name, -1)
                    log.write({"stage": stage.name, "reused": str(stored)})
                _drop_heads(model, stage)
                continue
            state = run_stage(stage, model, tasks, train_settings, accelerator, run_dir / rundir.CHECKPOINT / stage.name,
                              log, progress=config.train.progress and section.progress)
            stage_results[stage.name] = {"best_step": state.best_step, "steps": state.step,
                                         "train_seconds": state.wall_seconds, "stopped_early": state.stopped_early,
                                         "tokens_per_second": state.train_tokens / max(state.train_seconds, 1e-9),
                                         "best_dev": state.best_dev}
            if stage.keep_if_better:
                kept = keep_if_better(model, stage_results, stage, stages, run_dir / rundir.CHECKPOINT, end_task.metric)
                stage_results[stage.name]["kept"] = kept
            if stored is not None and accelerator.is_main_process:
                save_stage(stored, model, tokenizer, stage, tasks, stage_results[stage.name])
        _drop_heads(model, stage)

    metrics = {"name": config.name, "method": config.method, "end_task": config.end_task, "seed": config.seed,
               "model": config.model, "metric": end_task.metric}
    for split in ("dev", "test"):
        metrics[split] = evaluate(end_task, model, split, accelerator) if split in end_task.splits else None
    # the stage whose weights the model holds: the last one, unless it was not kept
    last = next(stage_results[s.name] for s in reversed(stages) if stage_results[s.name].get("kept", True))
    # train_seconds: what this run spent training; a reused stage's own cost is in its stage entry
    metrics.update(best_step=last["best_step"],
                   train_seconds=sum(s["train_seconds"] for s in stage_results.values() if "reused" not in s),
                   tokens_per_second=last["tokens_per_second"], stages=stage_results,
                   processes=accelerator.num_processes,
                   wall_seconds=time.time() - started, code=code)
    # no process may still be reading a checkpoint (keep_if_better) when the main one deletes them
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_model(run_dir, model, tokenizer, tasks)
        write_task_weights(run_dir, log.records(), {s.name for s in stages if len(s.tasks) > 1})
        write_json_atomic(finished, metrics)
        shutil.rmtree(run_dir / rundir.CHECKPOINT, ignore_errors=True)
    return metrics


def keep_if_better(model: MultiTaskModel, results: dict, stage: Stage, stages: list[Stage], checkpoints: Path,
                   metric: str) -> bool:
    """Keep a refining stage's weights only if its best dev metric beats the previous stage's; else
    put the previous stage's best weights back (its checkpoint is kept until the run ends)."""
    previous = stages[stages.index(stage) - 1]
    before = (results[previous.name].get("best_dev") or {}).get(metric)
    after = (results[stage.name].get("best_dev") or {}).get(metric)
    if before is None or (after is not None and after > before):
        return True
    from safetensors.torch import load_model

    load_model(model, str(best_weights(checkpoints / previous.name / "last")))
    return False


def write_task_weights(run_dir: Path, records: list[dict], stages: set[str]) -> None:
    """task_weights.csv (step,task,weight) from the weights logged by the multi-task stages."""
    lines = ["step,task,weight"]
    for record in records:
        if record.get("stage") in stages and "weights" in record:
            lines += [f"{record['step']},{task},{weight:.6g}" for task, weight in record["weights"].items()]
    if len(lines) > 1:
        write_text_atomic(run_dir / rundir.WEIGHTS, "\n".join(lines) + "\n")


def code_version() -> dict:
    """The tartan that trained a run: its version and, from a git checkout, the commit and whether
    the code differed from it, so that results of different code are never compared unawares."""
    from . import __version__

    version = {"tartan": __version__}
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        changed = subprocess.run(["git", "--no-optional-locks", "-C", str(source), "status", "--porcelain",
                                  "--untracked-files=no", "."],
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return version
    if commit.returncode == 0 and changed.returncode == 0:
        version.update(commit=commit.stdout.strip(), modified=bool(changed.stdout.strip()))
    return version


def stage_train_settings(config: Config, stage: Stage):
    """The stage's section (train, pretrain or muppet) as it trains: train.max_steps bounds every
    stage that sets no max_steps of its own (a quick run of any method); a stage's own max_steps
    stands, so that a sweep can cap the end task's steps without cutting a pre-finetuning stage short."""
    section = getattr(config, stage.train_section)
    return dataclasses.replace(section, max_steps=config.train.max_steps if section.max_steps is None else section.max_steps)


def defining_settings(train_settings) -> dict:
    """The settings of a section that decide what a stage computes (not its display settings)."""
    return {k: v for k, v in dataclasses.asdict(train_settings).items() if k not in rundir.DISPLAY_KEYS}


def stage_settings(config: Config, stage: Stage) -> dict:
    """The settings a reusable stage's result depends on, beside its model and tasks: its section as
    it trains, masking and tokenisation. Left out: the end task's share of its train set (no
    reusable stage reads the end task's labels, so runs at every share reuse one stage), and keys
    added after stages were stored while they hold their defaults (the stored stages stay valid)."""
    section = {k: v for k, v in defining_settings(stage_train_settings(config, stage)).items()
               if k not in ADDED_AT_DEFAULT or ADDED_AT_DEFAULT[k] != v}
    settings = {"section": section, "mlm": dataclasses.asdict(config.mlm),
                "data": {k: v for k, v in dataclasses.asdict(config.data).items() if k != "train_fraction"}}
    if config.model_config:
        settings["model_config"] = config.model_config
    return settings


ADDED_AT_DEFAULT = {"head_warmup_steps": 0}


def stage_key(config: Config, stage: Stage, tasks: dict, previous_key: str) -> str:
    """What a reusable stage's result depends on: the model it starts from (the previous stage's key
    included), its tasks and their data, and stage_settings (its step cap included)."""
    described = {
        "format": 1, "model": _model_identity(config.model), "previous": previous_key, "stage": stage.name,
        "head_init": stage.head_init,
        "tasks": [[name, kind, options, getattr(tasks[name], "digest", None)] for name, kind, options in stage.tasks],
        **stage_settings(config, stage),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def _model_identity(name: str) -> dict:
    path = Path(resolve_model_path(name))
    if not path.is_dir():
        return {"name": name}
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return {"name": name, "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]}


def save_stage(folder: Path, model: MultiTaskModel, tokenizer, stage: Stage, tasks: dict, result: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a temporary folder of its own: two runs may finish the same stage at once
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    (tmp / rundir.MODEL).mkdir(parents=True)
    model.body.save_pretrained(tmp / rundir.MODEL)
    tokenizer.save_pretrained(tmp / rundir.MODEL)
    for name in stage.task_names:
        save_head(model.heads[name], tmp / rundir.HEADS, name, tasks[name].head_meta())
    write_json_atomic(tmp / "stage.json", result)
    rundir.replace_dir(tmp, folder)


def finished_result(config: Config, run_dir: Path, device, requested_precision: dict[str, str] | None = None
                    ) -> dict | None:
    """The metrics of the run `config` describes if `run_dir` holds it finished; None if it holds
    it unfinished or nothing; an error if it holds another run. `requested_precision` (section ->
    precision before `resolve`): a finished run is the run asked for where its precision is the one
    asked for or the request was auto, whatever this device would resolve it to. Nothing trains, so
    a run finished in bf16 is read back on a machine without bf16 (a results folder moved, a sweep
    finished on another kind of machine); an unfinished one would resume at another precision: refused.
    config.yaml keeps only the resolved precision, so an auto request also reads back a run finished
    at a precision someone set by hand."""
    if not (run_dir / rundir.CONFIG).is_file():
        return None

    # where the folder was when the run was saved does not matter: it may have been moved since
    def settings(values: dict) -> dict:
        return {k: v for k, v in rundir.defining(values).items() if k != "output_dir"}

    # a section the saved run predates trained at today's default, precision auto, as it resolves here
    previous = with_defaults(rundir.read_config(run_dir))
    # a run saved before local model folders were recorded absolute: its folder, seen from here
    if isinstance(previous.get("model"), str):
        previous["model"] = absolute_model(previous["model"])
    for section in PRECISION_SECTIONS:
        if isinstance(previous.get(section), dict) and previous[section].get("precision") == "auto":
            previous[section]["precision"] = resolve_precision("auto", device)
    previous, current = settings(previous), settings(config.to_dict())
    changed = [k for k in set(previous) | set(current) if previous.get(k) != current.get(k)]
    # the precision asked for, resolved otherwise on this device than where the run trained
    device_made = [k for k in changed if _precision_as_requested(k, previous.get(k), requested_precision or {})]
    finished = (run_dir / rundir.METRICS).is_file()
    if finished:
        changed = [k for k in changed if k not in device_made]
    if changed:
        hint = "".join(f"; {k} began as {previous.get(k)}, and here the request resolves to {current.get(k)}"
                       for k in sorted(device_made) if k in changed)
        raise TartanError(f"holds a run with another config (differs in: {', '.join(sorted(changed))}){hint}; "
                          "pass --force to retrain, or choose another output_dir", run_dir)
    return rundir.read_metrics(run_dir) if finished else None


def _precision_as_requested(key: str, stored, requested_precision: dict[str, str]) -> bool:
    section, _, name = key.partition(".")
    return name == "precision" and requested_precision.get(section) in ("auto", stored)


def stored_stage(stored: Path, own_checkpoint: Path) -> tuple[dict, bool] | None:
    """A stored stage's results, and whether this run computed it (its checkpoint is at the stage's
    last step: it stored the stage, then was killed); None if the stage is not stored."""
    if not (stored / "stage.json").is_file():
        return None
    result = _read_json(stored / "stage.json")
    own = checkpoint_state(own_checkpoint)
    return result, own is not None and own["loop"]["step"] == result["steps"]


def load_stage(folder: Path, model: MultiTaskModel, stage: Stage) -> None:
    from safetensors.torch import load_file

    weights = {}
    for file in sorted((folder / rundir.MODEL).glob("*.safetensors")):
        weights.update(load_file(str(file)))
    missing, unexpected = model.body.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "pooler" not in k]:
        raise TartanError(f"stored stage does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                          "delete it to recompute", folder)
    for name in stage.task_names:
        load_head_weights(model.heads[name], folder / rundir.HEADS, name)


def _drop_heads(model: MultiTaskModel, stage: Stage) -> None:
    """Pre-finetuning heads are not carried into fine-tuning (nor saved with the run)."""
    if stage.drop_heads:
        for name in stage.task_names:
            del model.heads[name]


def _save_model(run_dir: Path, model: MultiTaskModel, tokenizer, tasks: dict) -> None:
    for folder, write in ((rundir.MODEL, lambda p: (model.body.save_pretrained(p), tokenizer.save_pretrained(p))),
                          (rundir.HEADS, lambda p: [save_head(model.heads[n], p, n, t.head_meta())
                                                    for n, t in tasks.items() if n in model.heads])):
        tmp = run_dir / f".{folder}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write(tmp)
        rundir.replace_dir(tmp, run_dir / folder)


def _read_json(path: Path) -> dict:
    """A stored stage's stage.json; malformed is a one-line error (the store is tartan's, but on disk)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TartanError(f"malformed stored stage ({first_line(error)}): delete {path.parent} to recompute it",
                          path) from None
    if not isinstance(value, dict) or not isinstance(value.get("steps"), int):
        raise TartanError(f"not a stored stage's results: delete {path.parent} to recompute it", path)
    return value


def load_run_config(run_dir: Path) -> Config:
    path = Path(run_dir) / rundir.CONFIG
    if not path.is_file():
        raise TartanError("not a run directory (no config.yaml)", run_dir)
    return load_config(path)
