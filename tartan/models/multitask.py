"""One shared body, one head per task: a single module so that accelerate (and DDP) wrap it once."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import TartanError


# model types whose encoder takes a prepared 4D attention mask as it is (transformers' masking_utils
# passes a 4D mask through unchanged). Given the 2D padding mask, transformers reads it on the host
# (`padding_mask.all()`, to see whether SDPA may skip it), which makes a GPU wait once per forward
# pass. Families that build masks of their own (DeBERTa) or several per layer type (ModernBERT's
# sliding window) keep the 2D mask.
PREPARED_MASK_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "albert", "distilbert",
                                 "mpnet", "roberta-prelayernorm", "ernie", "megatron-bert"})


class MultiTaskModel(nn.Module):
    def __init__(self, body: nn.Module, heads: dict[str, nn.Module], token_types: bool = True):
        super().__init__()
        self.body = body
        self.heads = nn.ModuleDict(heads)
        self.token_types = token_types

    def encode(self, batch: dict[str, torch.Tensor], embedding_noise: torch.Tensor | None = None) -> torch.Tensor:
        """The body's last hidden states; `embedding_noise` (R3F) is added to the token embeddings."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": self.prepared_mask(batch["attention_mask"])}
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

    def prepared_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The padding mask as the body's attention computes with it (bool for SDPA, additive for
        eager attention), where its family takes one; else the 2D mask itself."""
        style = getattr(self.body.config, "_attn_implementation", None)
        if self.body.config.model_type not in PREPARED_MASK_TYPES or style not in ("sdpa", "eager"):
            return mask
        keep = mask[:, None, None, :].bool()
        if style == "sdpa":
            return keep
        dtype = self.body.dtype
        return torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.heads[task](self.encode(batch), batch)
