"""BERT masking: select 15% of the tokens (never special or padding tokens); of those, 80% become
the mask token, 10% a random token, 10% stay. Drawn afresh every time a batch is drawn. With whole-
word masking the selection is made over words and every token of a chosen word is selected."""
from __future__ import annotations

import torch

IGNORE = -100


def select_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, generator: torch.Generator,
                  probability: float = 0.15, word_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Which tokens are selected (the first draw of mask_tokens: the same generator state gives the
    same selection), bool like input_ids."""
    if word_ids is None:
        return (torch.rand(input_ids.shape, generator=generator) < probability) & maskable
    # one draw per word, spread over the word's tokens
    words = word_ids.clamp(min=0)
    draw = torch.rand((input_ids.shape[0], int(words.max()) + 1), generator=generator) < probability
    return torch.gather(draw, 1, words) & maskable


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator, probability: float = 0.15,
                word_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels): labels hold the original id at selected positions, IGNORE elsewhere.

    maskable: bool tensor, False at special and padding tokens. word_ids: per token the index of its
    word within the row (-1 where not maskable) for whole-word masking."""
    selected = select_tokens(input_ids, maskable, generator, probability, word_ids)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    masked = input_ids.clone()
    masked[to_mask] = mask_id
    masked[to_random] = torch.randint(vocab_size, (int(to_random.sum()),), generator=generator)
    return masked, labels
