"""End-task aware training (Dery et al. 2021): the end task trained together with its auxiliary
objectives in one multi-task stage, early-stopped on the end task's dev metric, optionally followed
by fine-tuning on the end task alone. MT-TARTAN weighs the objectives with fixed weights,
META-TARTAN learns them from the end task's dev gradient."""
from __future__ import annotations

import dataclasses

from ..config import Config
from ..errors import TartanError
from ..tasks import task_kind
from . import Stage, methods


def auxiliary_task(config: Config, name: str) -> tuple[str, str, dict]:
    """`tapt` and `dapt` are masked-LM objectives (as in the continued pre-training baselines, but
    trained beside the end task); any other name is a labelled task folder of data_dir."""
    options = {"batch_size": config.multitask.auxiliary_batch_size or config.train.batch_size}
    # the run's seed orders and masks the masked-LM batches, as it orders the end task's: seeds of
    # a multi-task run differ in their auxiliary batches too (which lines, and the held-out share,
    # stay those of pretrain.seed)
    mlm_options = {**options, "seed": config.seed}
    if name == "tapt":
        return name, "mlm", {"source": "task", **mlm_options}
    if name == "dapt":
        return name, "mlm", {"path": config.domain.path, "size": config.domain.size, **mlm_options}
    return name, task_kind(config, name), {**options, "scale_loss": config.multitask.scale_loss}


def multitask_stages(config: Config, weighting: str, weighting_options: dict) -> list[Stage]:
    if config.end_task in config.multitask.auxiliary:
        raise TartanError(f"multitask.auxiliary lists the end task {config.end_task!r}: it is trained anyway")
    auxiliary = [auxiliary_task(config, name) for name in dict.fromkeys(config.multitask.auxiliary)]
    stages = [Stage(name="multitask", tasks=[(config.end_task, task_kind(config, config.end_task), {}), *auxiliary],
                    weighting=weighting, weighting_options=weighting_options)]
    if config.multitask.final_finetune:
        stages.append(Stage(name="finetune", tasks=[(config.end_task, task_kind(config, config.end_task), {})], keep_if_better=True))
    return stages


@methods.register("mt_tartan")
def mt_tartan(config: Config) -> list[Stage]:
    return multitask_stages(config, "static", {"weights": dict(config.multitask.weights)})


@methods.register("meta_tartan")
def meta_tartan(config: Config) -> list[Stage]:
    return multitask_stages(config, "meta", {**dataclasses.asdict(config.meta), "seed": config.seed})
