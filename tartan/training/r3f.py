"""R3F (Aghajanyan et al. 2020, "Better Fine-Tuning by Reducing Representational Collapse"): noise
on the token embeddings, and the symmetric KL divergence between the predictions on the clean and
on the noisy input as a penalty, so that the model stays smooth around its inputs. A task says which
categorical distributions its head's output holds (`prediction_logits`): a class, a choice, an
answer's start and end over the tokens; a regression task holds none, and has no penalty (as in
fairseq's reference implementation)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def embedding_noise(batch: dict[str, torch.Tensor], width: int, eps: float, noise: str) -> torch.Tensor:
    shape = (*batch["input_ids"].shape, width)
    if noise == "normal":
        return torch.randn(shape, device=batch["input_ids"].device) * eps
    return torch.empty(shape, device=batch["input_ids"].device).uniform_(-eps, eps)


def symmetric_kl(clean_logits: torch.Tensor, noisy_logits: torch.Tensor) -> torch.Tensor:
    """KL(p||q) + KL(q||p), summed over classes, averaged over the rows."""
    clean, noisy = F.log_softmax(clean_logits.float(), -1), F.log_softmax(noisy_logits.float(), -1)
    return (F.kl_div(noisy, clean, log_target=True, reduction="batchmean")
            + F.kl_div(clean, noisy, log_target=True, reduction="batchmean"))


def r3f_penalty(model, task, batch: dict[str, torch.Tensor], clean_output: torch.Tensor,
                eps: float, noise: str = "uniform", weight: float = 1.0) -> torch.Tensor | None:
    """weight x symmetric KL between `task`'s head output on the batch and on its noisy embeddings,
    averaged over the distributions the task's output holds; None for a task that holds none.
    Gradients flow through both predictions, as in the reference implementation."""
    clean = task.prediction_logits(clean_output, batch)
    if not clean:
        return None
    # the embeddings' own width: ALBERT and ELECTRA project narrower embeddings up to the hidden size
    width = model.body.get_input_embeddings().embedding_dim
    noisy_hidden = model.encode(batch, embedding_noise(batch, width, eps, noise))
    noisy = task.prediction_logits(model.heads[task.name](noisy_hidden, batch), batch)
    return weight * sum(symmetric_kl(c, n) for c, n in zip(clean, noisy)) / len(clean)
