"""The one training loop. Every method is stages of this loop: per step a batch from every task of
the stage, a loss per task, a weighting strategy that turns the losses into gradients, one optimizer
step; the end task's dev metric decides early stopping and the best weights."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.batching import pin, to_device
from ..errors import TartanError
from ..methods import Stage
from ..rundir import RunLog
from ..weighting import StepInputs, strategies
from .checkpoint import best_weights, checkpoint_state, load_checkpoint, rng_state, save_checkpoint
from . import sampling
from .device import gradient_scaler, to_host
from .evaluation import evaluate
from .averaging import OverlappedAveraging
from .distributed import collate_own_rows, decided_by_main, gathered, loss_share, on_main, reduce_dtype
from .prefetch import Prefetcher
from .r3f import r3f_penalty


@dataclass
class LoopState:
    step: int = 0
    best_metric: float | None = None
    best_step: int = 0
    stale_evals: int = 0
    stopped_early: bool = False
    train_tokens: int = 0
    train_seconds: float = 0.0  # time in training steps only
    wall_seconds: float = 0.0  # training and evaluation
    best_dev: dict | None = None
    # the log's window since its last line, read at the checkpoint: a resumed run logs as one never stopped
    log_window: dict | None = None


class LogWindow:
    """What the next log line averages: losses summed per task on the device, with the number of
    batches behind them on the host (under MUPPET's sampling a task may be drawn twice in a step or
    not at all, and its logged loss is the mean over its own batches), read once per log step; and
    the tokens and seconds since the last line."""

    def __init__(self, saved: dict | None = None, device: torch.device | None = None):
        saved = saved or {}
        self.tokens, self.seconds = saved.get("tokens", 0), saved.get("seconds", 0.0)
        self.batches: dict[str, int] = dict(saved.get("batches", {}))
        self.loss = {name: torch.tensor(total, dtype=torch.float32, device=device)
                     for name, total in saved.get("loss", {}).items()}

    def add_loss(self, name: str, loss: torch.Tensor) -> None:
        self.loss[name] = self.loss[name] + loss if name in self.loss else loss
        self.batches[name] = self.batches.get(name, 0) + 1

    def sums(self) -> dict[str, float]:
        names = list(self.loss)
        values = to_host(torch.stack([self.loss[name].float() for name in names])).tolist() if names else []
        return dict(zip(names, values))

    def mean_losses(self, names: list[str]) -> dict[str, float]:
        """Each task's mean loss over its batches in the window, in the order of `names`."""
        sums = self.sums()
        return {name: sums[name] / self.batches[name] for name in names if name in sums}

    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def state(self) -> dict:
        return {"loss": self.sums(), "batches": self.batches, "tokens": self.tokens, "seconds": self.seconds}


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the body and the heads at their own learning rates; no decay on biases and norms."""
    groups = []
    for prefix, lr in (("body.", train.lr_body), ("heads.", train.lr_head)):
        named = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]
        decay = [p for n, p in named if p.ndim > 1]
        no_decay = [p for n, p in named if p.ndim <= 1]
        part = prefix.rstrip(".")
        groups.append({"params": decay, "lr": lr, "weight_decay": train.weight_decay, "part": part})
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "part": part})
    groups = [g for g in groups if g["params"]]
    try:
        # the fused kernel is ~10x faster than the per-tensor loop on CPU: with a 22M-parameter body
        # the optimizer step is otherwise a third of a fine-tuning step
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, body_start: int = 0):
    """Linear warm-up over `warmup_steps`, then linear decay to 0 at `total_steps`. The body's groups
    run theirs from `body_start` (0 before it: frozen while the heads warm up)."""
    def ramp(start: int):
        def factor(step: int) -> float:
            step -= start
            if step < 0:
                return 0.0
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            return max(0.0, (total_steps - start - step) / max(1, total_steps - start - warmup_steps))
        return factor

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [ramp(body_start if group.get("part") == "body" else 0) for group in optimizer.param_groups])


@dataclass
class HostBatch:
    """One batch of a step as collated on the host, with the counts the step needs, taken there so
    that the device never stops to be asked."""

    task: str
    rows: dict[str, torch.Tensor]  # this process's rows of the global batch
    tokens: int  # their non-padding tokens
    own_units: int  # what the task's loss is a mean over, in these rows (task.loss_units)
    global_units: int  # the same over every process's rows (distributed.collate_own_rows)
    global_rows: int = 0  # rows of the global batch
    share: float = 1.0  # the factor on this batch's mean loss (set_shares)


class TaskBatches:
    """The batch a task contributes at a given step: a pure function of the step (epoch = step //
    batches per epoch), so that a resumed run draws the same batches; auxiliary tasks cycle. With
    several processes each takes its rows of the same global batch, so that N processes compute
    what one process would on the global batch."""

    def __init__(self, task, rank: int = 0, world: int = 1):
        self.task, self.rank, self.world = task, rank, world
        self.per_epoch = len(task.train_batches(0))
        self._epoch, self._batches = -1, []

    def at(self, number: int) -> HostBatch:
        """The task's `number`-th batch (its micro-step, unless a schedule draws the task), on the host."""
        epoch, offset = divmod(number, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self.task.train_batches(epoch)
        indices = self._batches[offset]
        rows, units = collate_own_rows(self.task, "train", indices, number, self.rank, self.world)
        return HostBatch(self.task.name, rows, int(rows["attention_mask"].sum()), self.task.loss_units(rows), units,
                         len(indices))


def set_shares(micro_batches: list[list[HostBatch]], world: int) -> None:
    """Each batch's factor on its mean loss, so that the step's gradient is, per task, that of the
    mean over the loss units of all its batches in the step, across micro-batches and processes:
    N accumulated micro-batches make the update of one batch N times as large, and a task drawn
    twice in a micro-step (MUPPET's sampling) adds both batches' losses, as a batch of both would
    count twice."""
    accumulate = len(micro_batches)
    by_task: dict[str, list[HostBatch]] = {}
    for micro in micro_batches:
        for batch in micro:
            by_task.setdefault(batch.task, []).append(batch)
    for batches in by_task.values():
        total = sum(b.global_units for b in batches)
        for b in batches:
            b.share = loss_share(b.own_units, total, world) * len(batches) / accumulate


def run_stage(stage: Stage, model: torch.nn.Module, tasks: dict, train: TrainConfig, accelerator,
              stage_dir: Path, log: RunLog, progress: bool = True) -> LoopState:
    """Train `model` on the tasks of `stage`; on return the model holds the dev-best weights."""
    end_task = tasks[stage.task_names[0]]
    sources = {name: TaskBatches(tasks[name], accelerator.process_index, accelerator.num_processes)
               for name in stage.task_names}
    per_epoch = {name: source.per_epoch for name, source in sources.items()}
    accumulate = train.accumulate
    # a step takes `accumulate` micro-steps of the schedule
    micro_per_epoch = sampling.steps_per_epoch(stage.sampling, stage.task_names, per_epoch, stage.sampling_options)
    steps_per_epoch = -(-micro_per_epoch // accumulate)
    total_steps = train.epochs * steps_per_epoch
    if train.max_steps is not None:
        total_steps = min(total_steps, train.max_steps)
    # train sizes, for the schemes that draw tasks in proportion to them
    sizes = {name: tasks[name].num_examples("train") for name in stage.task_names} if stage.sampling != "all" else {}
    schedule = sampling.Schedule(stage.sampling, stage.task_names, sizes, per_epoch, total_steps * accumulate,
                                 stage.sampling_options)
    eval_every = train.eval_every or steps_per_epoch
    strategy = strategies.get(stage.weighting)(stage.task_names, end_task.name, **stage.weighting_options)
    # heads of other stages get no gradient here: frozen, they stay out of the optimizer and DDP
    # does not wait for gradients that never come
    for name, head in model.heads.items():
        head.requires_grad_(name in stage.task_names)
    optimizer = make_optimizer(model, train)
    head_warmup = min(train.head_warmup_steps, total_steps)
    # heads alone during the warm-up: each head on its own task's loss, whatever the stage's weighting
    heads_only = strategies.get("sum")(stage.task_names, end_task.name)
    scheduler = linear_schedule(optimizer, int(train.warmup * (total_steps - head_warmup)), total_steps, head_warmup)
    # the model is not wrapped in DDP: gradients are averaged across processes by the loop, during
    # the strategy's backward where it is one (training/averaging.py says why)
    device = accelerator.device
    checkpoint = stage_dir / "last"
    # without held-out data the last weights are the result
    has_dev = any("dev" in tasks[name].splits for name in _selecting(stage))

    scaler = gradient_scaler(accelerator)
    sent_as = reduce_dtype(train.reduce_dtype)
    state = LoopState()
    saved = resume(checkpoint, model, optimizer, scheduler, accelerator)
    if saved is not None:
        check_batch_seeds(saved, stage, tasks, checkpoint)
        try:
            state = LoopState(**saved["loop"])
        except TypeError:
            raise TartanError(f"the checkpoint's loop state has fields this tartan does not know: delete {checkpoint} "
                              "to restart the stage", checkpoint / "state.json") from None
        strategy.load_state_dict(saved["strategy"])
        if scaler.is_enabled() and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
    log.drop_after(stage.name, state.step)  # what a killed run logged past its checkpoint
    if state.step >= total_steps or state.stopped_early:
        return _finish(model, checkpoint, state, accelerator)

    def step_batches(step: int) -> list[list[HostBatch]]:
        """The step's micro-steps, each a batch per drawn task; pinned when bound for a GPU."""
        micro = [[sources[name].at(number) for name, number in schedule.at(step * accumulate + m)]
                 for m in range(accumulate)]
        set_shares(micro, accelerator.num_processes)
        if device.type == "cuda":
            for batch in (b for batches in micro for b in batches):
                batch.rows = pin(batch.rows)
        return micro

    bar = tqdm(total=total_steps, initial=state.step, desc=stage.name, unit="step", dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process), mininterval=1.0)
    model.train()
    window = LogWindow(state.log_window, device)

    def save(best_is_current: bool) -> None:
        """Called by every process: each one's generators go into the checkpoint the main one writes."""
        rng_states = gathered(rng_state(), accelerator)
        if accelerator.is_main_process:
            state.log_window = window.state()  # the main process's: it writes the log
            extra = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
            save_checkpoint(checkpoint, model, optimizer, scheduler,
                            {"loop": dataclasses.asdict(state), "strategy": strategy.state_dict(),
                             "seeds": batch_seeds(stage, tasks), **extra}, best_is_current=best_is_current,
                            rng_states=rng_states)
        accelerator.wait_for_everyone()

    last_saved = time.monotonic()
    ahead_steps = train.prefetch if train.prefetch is not None else (2 if device.type == "cuda" else 0)
    with Prefetcher(step_batches, state.step, total_steps, ahead_steps) as ahead, \
            OverlappedAveraging(model, accelerator, sent_as) as averaging:
        for micro_batches in ahead:
            started = time.perf_counter()
            tokens, draws = 0, {}
            warming_heads = state.step < head_warmup
            for m, micro in enumerate(micro_batches):
                batches, losses, features, global_rows = {}, {}, {}, {}
                with accelerator.autocast():
                    for host_batch in micro:
                        name = host_batch.task
                        batch = to_device(host_batch.rows, device)
                        with torch.set_grad_enabled(not warming_heads):  # a frozen body computes no graph
                            hidden = model.encode(batch)
                        output = model.heads[name](hidden, batch)
                        loss = tasks[name].loss(output, batch)
                        penalty = r3f_penalty(model, tasks[name], batch, output, **stage.r3f) \
                            if stage.r3f and not warming_heads else None
                        if penalty is not None:
                            loss = loss + penalty
                        # logged: this process's own mean, left on the device until a log step
                        window.add_loss(name, loss.detach())
                        loss = scaler.scale(loss * host_batch.share)  # fp16 only: else the loss itself
                        # a task drawn twice in a micro-step (MUPPET's sampling) adds its batches' losses
                        losses[name] = losses[name] + loss if name in losses else loss
                        batches[name], features[name] = batch, hidden.detach()
                        global_rows[name] = host_batch.global_rows
                        draws[name] = draws.get(name, 0) + 1
                        tokens += host_batch.tokens
                last = m == accumulate - 1
                # micro-batches before the last add to .grad in this process only; a warm-up step
                # trains no body, and the overlapped averaging must not learn its buckets from one
                overlapped = last and not warming_heads
                inputs = StepInputs(state.step, model, tasks, batches, features, accelerator, dict(draws),
                                    last_micro_batch=last, global_rows=global_rows, reduce_dtype=sent_as,
                                    backward=averaging.backward if overlapped else torch.Tensor.backward)
                weights = (heads_only if warming_heads else strategy).backward(losses, inputs)
                del features, inputs
            if warming_heads:  # a decoder tied to the word embeddings still reaches them
                for p in model.body.parameters():
                    p.grad = None
            # what the strategy averaged already is not averaged twice; a warm-up step has no body's
            averaging.finish(body_averaged=warming_heads or strategy.body_averaged)
            scaler.unscale_(optimizer)
            if train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], train.grad_clip)
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            # fp16: skipped where a gradient overflowed (which reads the device), and the scale adapts
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1

            seconds = time.perf_counter() - started
            state.train_tokens += tokens
            state.train_seconds += seconds
            state.wall_seconds += seconds
            window.tokens += tokens
            window.seconds += seconds
            if state.step % train.log_every == 0 or state.step == total_steps:
                mean_loss = window.mean_losses(stage.task_names)
                record = {"stage": stage.name, "step": state.step, "epoch": state.step / steps_per_epoch,
                          "loss": mean_loss, "weights": weights, "lr": lr,
                          "tokens_per_second": window.tokens_per_second()}
                if warming_heads:
                    record["head_warmup"] = True
                if strategy.state_dict():  # e.g. META-TARTAN's logits and last cosines
                    record["strategy"] = strategy.state_dict()
                log.write(record)
                bar.set_postfix(loss=f"{sum(mean_loss.values()):.3f}",
                                tok_s=f"{window.tokens_per_second():.0f}", refresh=False)
                window = LogWindow()
            bar.update(1)

            if state.step % eval_every == 0 or state.step == total_steps:
                eval_started = time.perf_counter()
                # computed once on all processes' outputs, the same figures everywhere (evaluation.py)
                dev, value = evaluate_stage(stage, tasks, model, accelerator) if has_dev else ({}, None)
                improved = not has_dev or state.best_metric is None or value > state.best_metric
                if improved:
                    state.best_metric, state.best_step, state.stale_evals, state.best_dev = value, state.step, 0, dev
                elif state.step > head_warmup:  # the body has not trained yet: no reason to give up on it
                    state.stale_evals += 1
                state.stopped_early = bool(train.patience) and state.stale_evals >= train.patience
                state.wall_seconds += time.perf_counter() - eval_started
                # "task": whose metrics `dev` holds (a masked-LM stage's accuracy is not the end task's)
                log.write({"stage": stage.name, "step": state.step, "epoch": state.step / steps_per_epoch,
                           "task": _selecting(stage)[0] if stage.select_on == "end_task" else "mean",
                           "dev": dev, "best": improved})
                # the best weights live inside the checkpoint folder, so that both change in one
                # atomic replace: a kill can never leave best weights of one step beside state of another
                save(best_is_current=improved)
                last_saved = time.monotonic()
                if state.stopped_early:
                    break
            elif checkpoint_due(last_saved, train.checkpoint_minutes, state.step, train.log_every, accelerator):
                # between evaluations: only the resume state moves on, the best weights stay those chosen on dev
                save(best_is_current=False)
                last_saved = time.monotonic()
    bar.close()
    return _finish(model, checkpoint, state, accelerator)


def resume(checkpoint: Path, model, optimizer, scheduler, accelerator) -> dict | None:
    """The stage's checkpoint restored, if the main process finds one: its state (the step to go on
    from, the best so far, the strategy's) as the main process read it, and each process's own
    generators. Every process reads the weights: the run directory must be one they all see."""
    if not on_main(lambda: checkpoint_state(checkpoint) is not None, accelerator):
        return None
    saved = load_checkpoint(checkpoint, model, optimizer, scheduler, rank=accelerator.process_index)
    if saved is None:
        raise TartanError(f"process {accelerator.process_index} cannot read the checkpoint the main process resumes "
                          "from: on several machines the run directory must be on a filesystem all of them share",
                          checkpoint)
    main = decided_by_main({key: saved.get(key) for key in ("loop", "strategy", "scaler")}, accelerator)
    return {**saved, **{key: value for key, value in main.items() if value is not None}}


def batch_seeds(stage: Stage, tasks: dict) -> dict[str, int]:
    """The seed each task of the stage draws its batches (and masks) from."""
    return {name: tasks[name].seed for name in stage.task_names}


def check_batch_seeds(saved: dict, stage: Stage, tasks: dict, checkpoint: Path) -> None:
    """A checkpoint resumes only the batches it was drawing: a run checkpointed before the multi-task
    stage's masked-LM objectives followed the run's seed drew them from their data seed
    (pretrain.seed), and would silently change streams half-way."""
    legacy = {name: getattr(tasks[name], "data_seed", tasks[name].seed) for name in stage.task_names}
    before, now = saved.get("seeds", legacy), batch_seeds(stage, tasks)
    changed = [name for name in now if name in before and before[name] != now[name]]
    if changed:
        raise TartanError(f"this checkpoint drew the batches of {', '.join(changed)} from seed "
                          f"{', '.join(str(before[n]) for n in changed)}, this version of tartan draws them from "
                          f"{', '.join(str(now[n]) for n in changed)}: delete the checkpoint to restart the stage, "
                          "or train it with the tartan that began it", checkpoint)


def _checkpoint_due(last_saved: float, minutes: float | None) -> bool:
    return minutes is not None and time.monotonic() - last_saved >= 60 * minutes


def checkpoint_due(last_saved: float, minutes: float | None, step: int, log_every: int, accelerator) -> bool:
    """Whether a timed checkpoint is due now. With several processes, every one must take part in
    it (each saves its generators): the main process's clock decides, asked at log steps only."""
    if accelerator.num_processes == 1:
        return _checkpoint_due(last_saved, minutes)
    if minutes is None or step % log_every:
        return False
    return decided_by_main(_checkpoint_due(last_saved, minutes), accelerator)


def _selecting(stage: Stage) -> list[str]:
    return stage.task_names[:1] if stage.select_on == "end_task" else stage.task_names


def evaluate_stage(stage: Stage, tasks: dict, model: torch.nn.Module, accelerator) -> tuple[dict, float]:
    """The dev metrics the stage selects on, and the value that decides: the end task's metric, or
    (select_on: mean) the mean of every task's own metric over the tasks that have a dev split."""
    if stage.select_on == "end_task":
        end_task = tasks[stage.task_names[0]]
        dev = evaluate(end_task, model, "dev", accelerator)
        return dev, dev[end_task.metric]
    per_task = {name: evaluate(tasks[name], model, "dev", accelerator)
                for name in stage.task_names if "dev" in tasks[name].splits}
    value = sum(metrics[tasks[name].metric] for name, metrics in per_task.items()) / len(per_task)
    return {"mean": value, "tasks": per_task}, value


def _finish(model: torch.nn.Module, checkpoint: Path, state: LoopState, accelerator) -> LoopState:
    """The model leaves the stage with the stage's best weights; every process has read them before
    any goes on (the main process deletes the checkpoints once the run has finished)."""
    load_model(model, str(best_weights(checkpoint)))
    accelerator.wait_for_everyone()
    return state
