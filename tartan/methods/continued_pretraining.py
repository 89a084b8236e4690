"""Continued pre-training baselines (Gururangan et al. 2020): masked-LM on the task's own texts
(TAPT), on in-domain text (DAPT), or both chained (DAPT then TAPT), each followed by fine-tuning.
The masked-LM stages are reusable: five fine-tuning seeds share one pre-trained body."""
from __future__ import annotations

from ..config import Config
from . import Stage, methods
from .finetune import finetune


def tapt_stage(config: Config, after_dapt: bool = False) -> Stage:
    # after DAPT the MLM head goes on from the DAPT-trained one, as one continued pre-training would
    return Stage(name="tapt", tasks=[("tapt", "mlm", {"source": "task"})], train_section="pretrain", reusable=True,
                 head_init={"tapt": "dapt"} if after_dapt else {})


def dapt_stage(config: Config) -> Stage:
    return Stage(name="dapt", tasks=[("dapt", "mlm", {"path": config.domain.path, "size": config.domain.size})],
                 train_section="pretrain", reusable=True)


@methods.register("tapt")
def tapt(config: Config) -> list[Stage]:
    return [tapt_stage(config), *finetune(config)]


@methods.register("dapt")
def dapt(config: Config) -> list[Stage]:
    return [dapt_stage(config), *finetune(config)]


@methods.register("dapt_tapt")
def dapt_tapt(config: Config) -> list[Stage]:
    return [dapt_stage(config), tapt_stage(config, after_dapt=True), *finetune(config)]
