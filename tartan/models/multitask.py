"""One shared body, one head per task: a single module so that accelerate (and DDP) wrap it once."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import TartanError


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
        try:
            return self.body(**inputs).last_hidden_state
        except RuntimeError as error:
            # DeBERTa (v1) fills its attention mask with float32's minimum, which bf16 cannot hold
            # (huggingface/transformers#35332); say which setting avoids it instead of a kernel message
            if "without overflow" in str(error) and torch.is_autocast_enabled(batch["input_ids"].device.type):
                raise TartanError(f"model type {self.body.config.model_type!r} overflows under bf16 autocast "
                                  f"({error}); set precision=fp32 for this stage (train.precision, "
                                  "pretrain.precision)") from error
            raise

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.heads[task](self.encode(batch), batch)
