"""Task heads. The classification head is the research's: first-token vector, dropout,
Linear(H, H), tanh, dropout, Linear(H, C)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ..errors import TartanError, first_line
from ..rundir import read_json


class ClassificationHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden_states: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))


def save_head(head: nn.Module, folder: Path, task: str, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_model(head, str(folder / f"{task}.safetensors"))
    (folder / f"{task}.json").write_text(json.dumps(meta, indent=1))


def load_head_meta(folder: Path, task: str) -> dict:
    """A head's description (its type, label names, dropout); missing, malformed or of the wrong
    shape is a one-line error naming the file."""
    path = folder / f"{task}.json"
    if not path.is_file():
        raise TartanError(f"no head for task {task!r} here", path)
    meta = read_json(path, dict, "a JSON object describing the head")
    kind = meta.get("type", "classification")
    if not isinstance(kind, str):
        raise TartanError(f"'type' must be a task type's name, got {kind!r}", path)
    labels = meta.get("labels")
    if (kind == "classification" or "labels" in meta) and not (
            isinstance(labels, list) and len(labels) >= 2 and all(isinstance(label, str) for label in labels)):
        raise TartanError(f"'labels' must be a list of at least two label names, got {labels!r}", path)
    dropout = meta.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise TartanError(f"'dropout' must be a probability below 1, got {dropout!r}", path)
    return meta


def load_head_weights(head: nn.Module, folder: Path, task: str) -> nn.Module:
    """A head's weights; a missing, truncated or ill-fitting file is a one-line error naming it."""
    path = folder / f"{task}.safetensors"
    if not path.is_file():
        raise TartanError(f"no weights for head {task!r} here", path)
    try:
        load_model(head, str(path))
    except Exception as error:  # safetensors' own errors, a shape that does not fit
        raise TartanError(f"cannot read the head's weights ({first_line(error)})", path) from None
    return head
