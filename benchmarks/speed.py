"""Throughput of tartan's training loop against a bare hand-written PyTorch loop over the very same
batches, same model, same optimizer and precision, measured in one process; and the masked-LM step with the
vocabulary projection gathered at the masked positions against full logits; and the multi-task
step of MT-TARTAN (static weights) against META-TARTAN's (learned weights) on ACL-ARC with TAPT + DAPT
auxiliary tasks, each in a process of its own so that its peak memory is its own.

    python benchmarks/speed.py [--quick] [--data-dir ../shared/data] [--steps N] [--device auto]
                               [--batch-sizes 16,64] [--only finetune|multitask|r3f|attention|processes]

The last line printed is one JSON object (tokens_per_second_tartan, tokens_per_second_bare,
tartan_vs_bare, the same per precision, mlm_tokens_per_second, mlm_gathered_vs_full,
mt_seconds_per_step, meta_seconds_per_step, meta_vs_mt, and peak memory of each). Tokens are
non-padding tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tartan.config import load_config
from tartan.methods import Stage, methods
from tartan.models.body import accepts_token_types, load_body
from tartan.models.multitask import MultiTaskModel
from tartan.rundir import RunLog
from tartan.run import build_task
from tartan.training.device import make_accelerator, resolve_device
from tartan.training.loop import make_optimizer, run_stage


def fresh_model(config, task, token_types: bool | None = None, device: torch.device | str = "cpu"):
    torch.manual_seed(0)
    body, _ = load_body(config.model, config.trust_remote_code, config_overrides=config.model_config)
    return MultiTaskModel(body, {task.name: task.make_head(body)},
                          token_types=accepts_token_types(body) if token_types is None else token_types).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model, batches, train, precision: str, warmup: int) -> tuple[int, float]:
    """What a user would write by hand: forward, loss, backward, clip, step, each batch copied to the
    model's device from pinned memory; tokens/s after warm-up, timed from the device's clock edges."""
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, train)
    model.train()
    if device.type == "cuda":
        batches = [(task, {k: v.pin_memory() for k, v in batch.items()}) for task, batch in batches]
    tokens, started = 0, None
    for i, (task, batch) in enumerate(batches):
        if i == warmup:
            synchronize(device)
            started = time.perf_counter()
        if i >= warmup:
            tokens += int(batch["attention_mask"].sum())  # on the host copy
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = task.loss(model.heads[task.name](model.encode(batch), batch), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return tokens, time.perf_counter() - started


def tartan_loop(model, task, config, precision: str, steps: int, warmup: int, r3f: bool = False) -> tuple[int, float]:
    config.train.precision = precision
    config.train.max_steps = warmup + steps
    config.train.progress = False
    config.train.eval_every = 10 ** 9  # evaluation only at the end, and not timed
    accelerator = make_accelerator(precision, config.device)
    with tempfile.TemporaryDirectory() as tmp:
        log = RunLog(Path(tmp))
        stage = Stage(name="speed", tasks=[(task.name, "classification", {})],
                      r3f={"eps": 1e-5, "noise": "uniform", "weight": 1.0} if r3f else None)
        # warm-up steps are timed by the loop too: subtract them by running them as their own stage
        config.train.max_steps = warmup
        run_stage(stage, model, {task.name: task}, config.train, accelerator, Path(tmp) / "w", log, progress=False)
        config.train.max_steps = steps
        state = run_stage(stage, model, {task.name: task}, config.train, accelerator, Path(tmp) / "s", log,
                          progress=False)
    return state.train_tokens, state.train_seconds


def mlm_loop(config, tokenizer, precision: str, steps: int, warmup: int, full_logits: bool) -> float:
    """Masked-LM steps on ACL-ARC's own texts (TAPT): the vocabulary projection at the selected
    positions only (gathered) or over every token (full logits), same masks either way."""
    from tartan.tasks.mlm import MaskedLMTask

    task = MaskedLMTask.from_config("tapt", config, tokenizer, source="task")
    batches = [(task, task.collate("train", indices, draw=i, full_logits=full_logits))
               for i, indices in enumerate(task.train_batches(0)[:warmup + steps])]
    batches = [(t, t.host_fields(b)) for t, b in batches]  # the positions a step gathers, chosen on the host
    tokens, seconds = bare_loop(fresh_model(config, task, token_types=False, device=resolve_device(config.device)),
                                batches, config.pretrain, precision, warmup)
    return tokens / seconds


def multitask_step(recipe: str, data_dir: str, steps: int, warmup: int, overrides: list[str] = ()) -> dict:
    """Seconds per step of the multi-task stage of `recipe` (end task + TAPT + DAPT, a batch of 16
    each), after `warmup` untimed steps; peak resident memory of this process."""
    config = load_config(Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml",
                         [f"data_dir={data_dir}", "train.progress=false", f"train.eval_every={10 ** 9}", *overrides])
    stage = methods.get(config.method)(config)[0]
    body, tokenizer = load_body(config.model, config.trust_remote_code, config_overrides=config.model_config)
    tasks = {name: build_task(name, kind, options, config, tokenizer) for name, kind, options in stage.tasks}
    torch.manual_seed(0)
    model = MultiTaskModel(body, {name: task.make_head(body) for name, task in tasks.items()},
                           token_types=accepts_token_types(body))
    accelerator = make_accelerator(config.train.precision, config.device)
    model.to(accelerator.device)
    with tempfile.TemporaryDirectory() as tmp:
        log = RunLog(Path(tmp))
        config.train.max_steps = warmup
        run_stage(stage, model, tasks, config.train, accelerator, Path(tmp) / "w", log, progress=False)
        config.train.max_steps = steps
        state = run_stage(stage, model, tasks, config.train, accelerator, Path(tmp) / "s", log, progress=False)
    return {"seconds": state.train_seconds, "steps": state.step, "tokens": state.train_tokens,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def compare_r3f(config, task, precision: str, steps: int, rounds: int, warmup: int) -> dict:
    """A fine-tuning step with R3F (a second, noisy forward and the symmetric KL) against a plain one,
    alternating over rounds on the same batches."""
    totals = {"plain": [0, 0.0], "r3f": [0, 0.0]}
    for round_ in range(rounds):
        for name in (("plain", "r3f") if round_ % 2 == 0 else ("r3f", "plain")):
            tokens, seconds = tartan_loop(fresh_model(config, task, device=resolve_device(config.device)), task,
                                          config, precision, steps, warmup, r3f=name == "r3f")
            totals[name][0] += tokens
            totals[name][1] += seconds
    plain, r3f = (totals[n][1] / totals[n][0] for n in ("plain", "r3f"))  # seconds per token
    result = {"r3f_seconds_per_1k_tokens": round(1000 * r3f, 3), "plain_seconds_per_1k_tokens": round(1000 * plain, 3),
              "r3f_vs_plain": round(r3f / plain, 3)}
    print(f"r3f ({precision}): {result['r3f_seconds_per_1k_tokens']} s per 1k tokens against "
          f"{result['plain_seconds_per_1k_tokens']} plain, ratio {result['r3f_vs_plain']}", flush=True)
    return result


def _step_child(recipe: str, data_dir: str, steps: int, overrides: list[str] = (), threads: int | None = None):
    """A process timing `steps` multi-task steps of `recipe` (see multitask_step)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    command = [sys.executable, __file__, "--multitask-step", recipe, "--data-dir", data_dir, "--steps", str(steps)]
    return subprocess.Popen(command + [f"--set={o}" for o in [*DEVICE_OVERRIDE, *overrides]], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


def _measured(child) -> dict:
    out, _ = child.communicate()
    if child.returncode:
        raise RuntimeError(f"the timing process failed ({child.args})")
    return json.loads(out.strip().splitlines()[-1])


def alternate_children(variants: dict[str, tuple[str, list[str]]], data_dir: str, steps: int,
                       rounds: int) -> dict[str, dict]:
    """Variants (name -> recipe, overrides) timed in fresh processes, their order reversed every
    round (a single pair swings with the machine's state): per variant its seconds per step over all
    rounds and its largest peak memory."""
    totals = {name: [0.0, 0, []] for name in variants}
    for round_ in range(rounds):
        for name in (list(variants) if round_ % 2 == 0 else list(reversed(variants))):
            recipe, overrides = variants[name]
            measured = _measured(_step_child(recipe, data_dir, steps, overrides))
            totals[name][0] += measured["seconds"]
            totals[name][1] += measured["steps"]
            totals[name][2].append(measured["peak_rss_mib"])
    return {name: {"seconds_per_step": seconds / count, "steps": count, "peak_rss_mib": max(rss)}
            for name, (seconds, count, rss) in totals.items()}


def compare_multitask(data_dir: str, steps: int, rounds: int, warmup: int) -> dict:
    """MT-TARTAN against META-TARTAN (its meta head on the step's batch, and on a dev batch with the
    body run again: meta.head_batch=dev), alternating over rounds, each round a fresh process per method."""
    timed = alternate_children({"mt_tartan": ("mt_tartan", []), "meta_tartan": ("meta_tartan", []),
                                "meta_dev_head": ("meta_tartan", ["meta.head_batch=dev"])},
                               data_dir, steps, rounds)
    mt, meta, dev = (timed[r]["seconds_per_step"] for r in ("mt_tartan", "meta_tartan", "meta_dev_head"))
    result = {"multitask_steps": timed["mt_tartan"]["steps"], "mt_seconds_per_step": round(mt, 3),
              "meta_seconds_per_step": round(meta, 3), "meta_vs_mt": round(meta / mt, 3),
              "meta_dev_head_seconds_per_step": round(dev, 3), "meta_dev_head_vs_mt": round(dev / mt, 3),
              "mt_peak_rss_mib": round(timed["mt_tartan"]["peak_rss_mib"]),
              "meta_peak_rss_mib": round(timed["meta_tartan"]["peak_rss_mib"])}
    print(f"multitask: mt_tartan {mt:.3f} s/step, meta_tartan {meta:.3f} s/step, ratio {meta / mt:.3f}; "
          f"with the dev head {dev:.3f} s/step, ratio {dev / mt:.3f}; "
          f"peak memory {result['mt_peak_rss_mib']} MiB against {result['meta_peak_rss_mib']} MiB", flush=True)
    return result


ATTENTION_DROPOUT_OFF = "model_config={attention_probs_dropout_prob: 0}"
DEVICE_OVERRIDE: list[str] = []  # the device every child process trains on (--device)


def compare_attention_dropout(data_dir: str, steps: int, rounds: int) -> dict:
    """The MT-TARTAN step with the model's attention dropout (0.1) against none: on CPU, dropout on
    the attention probabilities keeps PyTorch's attention on its unfused path."""
    timed = alternate_children({"default": ("mt_tartan", []), "off": ("mt_tartan", [ATTENTION_DROPOUT_OFF])},
                               data_dir, steps, rounds)
    default, off = (timed[n]["seconds_per_step"] for n in ("default", "off"))
    result = {"attention_dropout_seconds_per_step": round(default, 3), "no_attention_dropout_seconds_per_step":
              round(off, 3), "no_attention_dropout_vs_default": round(off / default, 3)}
    print(f"attention dropout: {default:.3f} s/step with, {off:.3f} without, ratio {off / default:.3f}", flush=True)
    return result


def compare_processes(data_dir: str, steps: int, rounds: int) -> dict:
    """Throughput of one MT-TARTAN run using every core against two 1-thread runs at once (what
    `tartan sweep --jobs 2` does), in steps per second summed over the runs."""
    single, parallel = [0.0, 0], [0.0, 0]
    for _ in range(rounds):
        measured = _measured(_step_child("mt_tartan", data_dir, steps))
        single[0] += measured["seconds"]
        single[1] += measured["steps"]
        children = [_step_child("mt_tartan", data_dir, steps, threads=1) for _ in range(2)]
        for child in children:  # each one's own steps over its own time
            measured = _measured(child)
            parallel[0] += measured["seconds"] / 2
            parallel[1] += measured["steps"] / 2
    one, two = single[1] / single[0], 2 * parallel[1] / parallel[0]
    result = {"one_run_steps_per_second": round(one, 3), "two_runs_steps_per_second": round(two, 3),
              "two_runs_vs_one": round(two / one, 3)}
    print(f"processes: one 2-thread run {one:.3f} steps/s, two 1-thread runs {two:.3f} steps/s together, "
          f"ratio {two / one:.3f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps (under 2 minutes)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--task", default="citation_intent")
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--only", choices=("finetune", "multitask", "r3f", "attention", "processes"),
                        help="run one part only")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-sizes", help="fine-tuning batch sizes to compare at, e.g. 16,64 (default: the recipe's)")
    parser.add_argument("--multitask-step", help=argparse.SUPPRESS)  # the child process of compare_multitask
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)  # the child's overrides
    args = parser.parse_args()
    steps = args.steps or (6 if args.quick else 30)  # per round
    DEVICE_OVERRIDE[:] = [f"device={args.device}"]
    rounds = 2 if args.quick else 4
    warmup = 3
    if args.multitask_step:
        print(json.dumps(multitask_step(args.multitask_step, args.data_dir, steps, warmup, args.set)))
        return
    if args.only == "attention":
        print(json.dumps(compare_attention_dropout(args.data_dir, steps, rounds)))
        return
    if args.only == "processes":
        print(json.dumps(compare_processes(args.data_dir, steps, rounds // 2)))
        return
    if args.only == "multitask":
        print(json.dumps(compare_multitask(args.data_dir, steps, rounds, warmup)))
        return
    config = load_config(Path(__file__).resolve().parents[1] / "recipes" / "finetune.yaml",
                         [f"data_dir={args.data_dir}", f"end_task={args.task}", f"device={args.device}"])
    _, tokenizer = load_body(config.model, config.trust_remote_code, config_overrides=config.model_config)
    task = build_task(args.task, "classification", {}, config, tokenizer)
    if args.only == "r3f":
        print(json.dumps(compare_r3f(config, task, args.precisions.split(",")[0], steps, rounds, warmup)))
        return
    device = resolve_device(args.device)
    result = {"task": args.task, "model": config.model, "device": str(device), "steps": steps,
              "batch_size": config.train.batch_size, "threads": torch.get_num_threads()}
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [config.train.batch_size]
    for number, batch_size in enumerate(batch_sizes):
        # keys of the first batch size unprefixed, as before batch sizes could be chosen
        prefix = "" if number == 0 else f"batch{batch_size}_"
        config.train.batch_size = batch_size
        sized = build_task(args.task, "classification", {"batch_size": batch_size}, config, tokenizer)
        # the tartan side runs its warm-up as a stage of its own, which starts again at the first batch
        epoch = sized.train_batches(0)
        batches = [(sized, sized.collate("train", i)) for i in list(epoch[:warmup]) + list(epoch[:steps])]
        for precision in args.precisions.split(","):
            # alternate the two loops over rounds (a single pair swings by 10-20% with the
            # machine's state); each figure is its total tokens over its total seconds
            totals = {"tartan": [0, 0.0], "bare": [0, 0.0]}
            for round_ in range(rounds):
                for name in (("tartan", "bare") if round_ % 2 == 0 else ("bare", "tartan")):
                    model = fresh_model(config, sized, device=device)
                    if name == "tartan":
                        tokens, seconds = tartan_loop(model, sized, config, precision, steps, warmup)
                    else:
                        tokens, seconds = bare_loop(model, batches, config.train, precision, warmup)
                    totals[name][0] += tokens
                    totals[name][1] += seconds
            tartan, bare = (totals[n][0] / totals[n][1] for n in ("tartan", "bare"))
            result[f"{prefix}{precision}_tokens_per_second_tartan"] = round(tartan, 1)
            result[f"{prefix}{precision}_tokens_per_second_bare"] = round(bare, 1)
            result[f"{prefix}{precision}_tartan_vs_bare"] = round(tartan / bare, 3)
            print(f"batch {batch_size}, {precision}: tartan {tartan:.0f} tokens/s, bare {bare:.0f} tokens/s, "
                  f"ratio {tartan / bare:.3f}", flush=True)
    config.train.batch_size = batch_sizes[0]
    if args.only == "finetune":
        print(json.dumps(result))
        return
    first = args.precisions.split(",")[0]
    mlm_steps = max(4, steps // 2)
    gathered = mlm_loop(config, tokenizer, first, mlm_steps, warmup, full_logits=False)
    full = mlm_loop(config, tokenizer, first, mlm_steps, warmup, full_logits=True)
    result["mlm_batch_size"] = config.pretrain.batch_size
    result["mlm_tokens_per_second"] = round(gathered, 1)
    result["mlm_full_logits_tokens_per_second"] = round(full, 1)
    result["mlm_gathered_vs_full"] = round(gathered / full, 3)
    print(f"mlm ({first}): gathered {gathered:.0f} tokens/s, full logits {full:.0f} tokens/s, "
          f"ratio {gathered / full:.3f}", flush=True)
    result.update(compare_multitask(args.data_dir, max(4, steps // 2), rounds, warmup))
    result.update(compare_r3f(config, task, first, steps, rounds, warmup))
    result["tokens_per_second_tartan"] = result[f"{first}_tokens_per_second_tartan"]
    result["tokens_per_second_bare"] = result[f"{first}_tokens_per_second_bare"]
    result["tartan_vs_bare"] = result[f"{first}_tartan_vs_bare"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
