"""One shared body, one head per task: a single module so that accelerate (and DDP) wrap it once."""
from __future__ import annotations

import torch
from torch import nn


class MultiTaskModel(nn.Module):
    def __init__(self, body: nn.Module, heads: dict[str, nn.Module], token_types: bool = True):
        super().__init__()
        self.body = body
        self.heads = nn.ModuleDict(heads)
        self.token_types = token_types

    def encode(self, batch: dict[str, torch.Tensor], embedding_noise: torch.Tensor | None = None) -> torch.Tensor:
        """The body's last hidden states; `embedding_noise` (R3F) is added to the token embeddings."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if embedding_noise is not None:
            inputs["inputs_embeds"] = self.body.get_input_embeddings()(inputs.pop("input_ids")) + embedding_noise
        if self.token_types and "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        return self.body(**inputs).last_hidden_state

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.heads[task](self.encode(batch), batch)
