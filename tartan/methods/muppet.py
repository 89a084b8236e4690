"""MUPPET-style pre-finetuning (Aghajanyan et al. 2021, "Muppet: Massive Multi-task
Representations with Pre-Finetuning"): a stage of many labelled tasks at once, each with its own
head, then the end task's fine-tuning. The pre-finetuning stage depends on nothing of the end task
or its seed, so it is computed once and reused; its heads are dropped before fine-tuning."""
from __future__ import annotations

from ..config import Config
from ..errors import TartanError
from ..tasks import task_kind
from . import Stage, methods
from .finetune import finetune


def prefinetune_stage(config: Config) -> Stage:
    settings = config.muppet
    if not settings.tasks:
        raise TartanError("muppet.tasks is empty: name the labelled task folders to pre-finetune on")
    if config.end_task in settings.tasks:
        raise TartanError(f"muppet.tasks lists the end task {config.end_task!r}: pre-finetuning must not see it")
    # the stage's own seed orders the batches: runs that differ in the fine-tuning seed share the stage
    options = {"batch_size": settings.batch_size, "eval_batch_size": settings.eval_batch_size,
               "head_dropout": settings.head_dropout, "scale_loss": settings.scale_loss, "seed": settings.seed}
    return Stage(name="prefinetune", tasks=[(name, task_kind(config, name), dict(options))
                        for name in dict.fromkeys(settings.tasks)],
                 weighting="sum", train_section="muppet", reusable=True, select_on="mean", drop_heads=True,
                 sampling=settings.batching,
                 sampling_options={"tasks_per_update": settings.tasks_per_update, "sampling": settings.sampling,
                                   "seed": settings.seed},
                 r3f={"eps": settings.r3f_eps, "noise": settings.r3f_noise, "weight": settings.r3f_lambda}
                 if settings.r3f else None)


@methods.register("muppet")
def muppet(config: Config) -> list[Stage]:
    return [prefinetune_stage(config), *finetune(config)]
