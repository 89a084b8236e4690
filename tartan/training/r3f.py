"""R3F (Aghajanyan et al. 2020, "Better Fine-Tuning by Reducing Representational Collapse"): noise
on the token embeddings, and the symmetric KL divergence between the predictions on the clean and
on the noisy input as a penalty, so that the model stays smooth around its inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def embedding_noise(batch: dict[str, torch.Tensor], hidden_size: int, eps: float, noise: str) -> torch.Tensor:
    shape = (*batch["input_ids"].shape, hidden_size)
    if noise == "normal":
        return torch.randn(shape, device=batch["input_ids"].device) * eps
    return torch.empty(shape, device=batch["input_ids"].device).uniform_(-eps, eps)


def symmetric_kl(clean_logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
    """KL(p||q) + KL(q||p), summed over classes, averaged over the rows."""
    clean, noisy = F.log_softmax(clean_logits.float(), -1), F.log_softmax(noisy_logits.float(), -1)
    return (F.kl_div(noisy, clean, log_target=True, reduction="batchmean")
            + F.kl_div(clean, noisy, log_target=True, reduction="batchmean"))


def r3f_penalty(model, task_name: str, batch: dict[str, torch.Tensor], clean_output: torch.Tensor,
                eps: float, noise: str = "uniform", weight: float = 1.0) -> torch.Tensor:
    """weight x symmetric KL between the head's output on the batch and on its noisy embeddings.
    Gradients flow through both predictions, as in the reference implementation."""
    noisy_hidden = model.encode(batch, embedding_noise(batch, model.body.config.hidden_size, eps, noise))
    return weight * symmetric_kl(clean_output, model.heads[task_name](noisy_hidden, batch))
