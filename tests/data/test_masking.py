import torch

from tartan.data.masking import IGNORE, mask_tokens

MASK, VOCAB, PAD, CLS, SEP = 4, 1000, 0, 2, 3


def sample(rows=400, width=128, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (rows, width), generator=generator)
    lengths = torch.randint(8, width + 1, (rows,), generator=generator)
    positions = torch.arange(width).expand(rows, width)
    real = positions < lengths[:, None]
    ids[~real] = PAD
    ids[:, 0] = CLS
    ids[torch.arange(rows), lengths - 1] = SEP
    special = torch.zeros(VOCAB, dtype=torch.bool)
    special[[PAD, CLS, SEP, MASK]] = True
    maskable = real & ~special[ids]
    return ids, maskable


def test_bert_masking_proportions_and_never_special_or_padding():
    ids, maskable = sample()
    masked, labels = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(1))
    selected = labels != IGNORE
    assert not (selected & ~maskable).any()  # never a special or padding token
    rate = selected.sum().item() / maskable.sum().item()
    assert abs(rate - 0.15) < 0.005, rate
    n = selected.sum().item()
    to_mask = (masked == MASK) & selected
    kept = (masked == ids) & selected
    random = selected & ~to_mask & ~kept
    assert abs(to_mask.sum().item() / n - 0.8) < 0.01
    # a random replacement can draw the original token: 'kept' is 10% plus a hair
    assert abs(kept.sum().item() / n - 0.1) < 0.01
    assert abs(random.sum().item() / n - 0.1) < 0.01
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])


def test_masks_differ_between_draws_and_repeat_for_the_same_seed():
    ids, maskable = sample(rows=20)
    first = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(1))[1]
    again = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(1))[1]
    other = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(2))[1]
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_whole_word_masking_selects_all_tokens_of_a_word():
    ids, maskable = sample(rows=300)
    # words of 1-3 tokens along each row
    word_ids = torch.full(ids.shape, -1)
    generator = torch.Generator().manual_seed(3)
    for row in range(ids.shape[0]):
        word, left = -1, 0
        for col in range(ids.shape[1]):
            if not maskable[row, col]:
                continue
            if left == 0:
                word, left = word + 1, int(torch.randint(1, 4, (1,), generator=generator))
            word_ids[row, col] = word
            left -= 1
    _, labels = mask_tokens(ids, maskable, MASK, VOCAB, torch.Generator().manual_seed(4), word_ids=word_ids)
    selected = labels != IGNORE
    assert not (selected & ~maskable).any()
    for row in range(0, ids.shape[0], 7):
        for word in word_ids[row].unique():
            if word < 0:
                continue
            in_word = selected[row][word_ids[row] == word]
            assert in_word.all() or not in_word.any()
    rate = selected.sum().item() / maskable.sum().item()
    assert 0.12 < rate < 0.18
