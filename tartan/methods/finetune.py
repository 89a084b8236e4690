from __future__ import annotations

from ..config import Config
from ..tasks import task_kind
from . import Stage, methods


@methods.register("finetune")
def finetune(config: Config) -> list[Stage]:
    """Plain fine-tuning of the body and a fresh head on the end task."""
    return [Stage(name="finetune", tasks=[(config.end_task, task_kind(config, config.end_task), {})])]
