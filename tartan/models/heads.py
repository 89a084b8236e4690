"""Task heads. The classification head is the research's: first-token vector, dropout,
Linear(H, H), tanh, dropout, Linear(H, C)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn


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
    return json.loads((folder / f"{task}.json").read_text())


def load_head_weights(head: nn.Module, folder: Path, task: str) -> nn.Module:
    load_model(head, str(folder / f"{task}.safetensors"))
    return head
