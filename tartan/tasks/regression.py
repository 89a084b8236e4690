"""Regression of a score from a text (or text pair), as STS-B: a task folder whose train labels are
numbers. A scalar head (the classification head with one output), mean squared error, and
Pearson's and Spearman's correlations (Pearson's selects, as GLUE reports STS-B)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from ..data.labelled import LabelledTask
from ..models.heads import ClassificationHead
from . import task_types
from .classification import ClassificationTask


@task_types.register("regression")
class RegressionTask(ClassificationTask):
    metrics = ("pearson", "spearman")
    scores = True

    @classmethod
    def claims(cls, row: dict) -> bool:
        # a JSON number with a fraction (5.0, 3.8): a score; an integer label stays a class name
        return isinstance(row.get("label"), float)

    @staticmethod
    def default_metric(name: str) -> str:
        return "pearson"

    def label_array(self, data: LabelledTask, split: str) -> np.ndarray:
        return np.asarray(data.splits[split].labels, dtype=np.float32)

    def chance_loss(self) -> float:
        """The mean squared error of always predicting the train mean: the variance of the train
        scores. Divided by it (MUPPET's loss scaling), a prediction that knows nothing costs 1, as a
        uniform one does in a classification task."""
        return float(np.var(self.labels["train"])) or 1.0

    @property
    def num_outputs(self) -> int:
        return 1

    def head_meta(self) -> dict:
        return {"type": "regression", "dropout": self.head_dropout, "pairs": self.has_pairs}

    @staticmethod
    def head_from_meta(hidden_size: int, meta: dict):
        return ClassificationHead(hidden_size, 1, meta.get("dropout", 0.1))

    def loss(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(output.float().squeeze(-1), batch["labels"].float()) * self.loss_scale

    def prediction_logits(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return []  # a score is no distribution: R3F leaves regression alone, as fairseq's does

    def metrics_of(self, outputs: np.ndarray, gold: np.ndarray) -> dict[str, float]:
        predicted = outputs[:, 0].astype(np.float64)
        constant = np.ptp(predicted) == 0 or np.ptp(gold) == 0  # a correlation is undefined: none
        return {"pearson": 0.0 if constant else float(stats.pearsonr(predicted, gold)[0]),
                "spearman": 0.0 if constant else float(stats.spearmanr(predicted, gold)[0]),
                "loss": float(np.mean((predicted - gold) ** 2))}  # the mean squared error

    @staticmethod
    def prediction(outputs: np.ndarray, meta: dict) -> dict:
        return {"score": round(float(outputs[0]), 6)}
