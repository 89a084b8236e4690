"""tartan.data.encoding: truncation, token types for pairs, and the on-disk token cache (a hit never
calls the tokenizer; another max_length or another file digest misses)."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer, BertTokenizerFast

from tartan.data.batching import collate
from tartan.data.encoding import encode, tokenizer_fingerprint
from tartan.errors import TartanError

from helpers import make_texts

TEXTS = make_texts(12, seed=3)
PAIRS = make_texts(12, seed=4)


@pytest.fixture(scope="module")
def bert_tokenizer(tiny_models):
    return AutoTokenizer.from_pretrained(tiny_models["bert"])


@pytest.fixture()
def calls(bert_tokenizer, monkeypatch):
    """Counts calls of the tokenizer (its class's __call__, as `tokenizer(...)` looks it up there)."""
    counter = {"n": 0}
    cls = type(bert_tokenizer)
    original = cls.__call__

    def counting(self, *args, **kwargs):
        counter["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", counting)
    return counter


def same_ids(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_encode_without_cache_matches_the_tokenizer(bert_tokenizer):
    encoded = encode(bert_tokenizer, TEXTS, None, max_length=64)
    expected = bert_tokenizer(TEXTS, truncation=True, max_length=64)["input_ids"]
    assert len(encoded) == len(TEXTS)
    assert [list(ids) for ids in encoded.input_ids] == expected
    assert list(encoded.lengths) == [len(ids) for ids in expected]


def test_second_call_is_a_cache_hit_that_never_tokenizes(bert_tokenizer, calls, tmp_path):
    cache = tmp_path / "cache"
    first = encode(bert_tokenizer, TEXTS, None, max_length=64, source_digest="digest-a", cache=cache)
    assert calls["n"] == 1
    assert len(list((cache / "tokens").glob("*.npz"))) == 1
    second = encode(bert_tokenizer, TEXTS, None, max_length=64, source_digest="digest-a", cache=cache)
    assert calls["n"] == 1
    assert same_ids(first.input_ids, second.input_ids)
    assert (first.token_type_ids is None) == (second.token_type_ids is None)


def test_a_damaged_cache_entry_is_tokenised_again_and_replaced(bert_tokenizer, calls, tmp_path):
    cache = tmp_path / "cache"
    first = encode(bert_tokenizer, TEXTS, None, max_length=64, source_digest="digest-a", cache=cache)
    entry = next((cache / "tokens").glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:40])  # a copy cut short
    again = encode(bert_tokenizer, TEXTS, None, max_length=64, source_digest="digest-a", cache=cache)
    assert calls["n"] == 2 and same_ids(first.input_ids, again.input_ids)
    encode(bert_tokenizer, TEXTS, None, max_length=64, source_digest="digest-a", cache=cache)
    assert calls["n"] == 2  # the entry was written whole again


def test_a_cache_that_cannot_be_a_folder_is_one_line(bert_tokenizer, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(TartanError, match="the tokenisation cache .TARTAN_CACHE. cannot be made") as caught:
        encode(bert_tokenizer, TEXTS, None, max_length=64, source_digest="digest-a", cache=tmp_path / "a_file")
    assert caught.value.path == str(tmp_path / "a_file" / "tokens")


def test_cache_hit_survives_a_fresh_tokenizer_object(tiny_models, tmp_path):
    """Another process loading the same tokenizer hits the cache the first one wrote."""
    cache = tmp_path / "cache"
    one = AutoTokenizer.from_pretrained(tiny_models["bert"])
    first = encode(one, TEXTS, None, 64, source_digest="d", cache=cache)
    fresh = AutoTokenizer.from_pretrained(tiny_models["bert"])
    assert tokenizer_fingerprint(fresh) == tokenizer_fingerprint(one)
    second = encode(fresh, ["not tokenized"] * len(TEXTS), None, 64, source_digest="d", cache=cache)  # keyed by digest
    assert same_ids(first.input_ids, second.input_ids)


def test_fingerprint_does_not_depend_on_earlier_calls(tiny_models, tmp_path):
    unused = AutoTokenizer.from_pretrained(tiny_models["bert"])
    used = AutoTokenizer.from_pretrained(tiny_models["bert"])
    used(TEXTS, truncation=True, max_length=32)
    used.save_pretrained(tmp_path / "saved")  # what train() writes to RUN/model
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert tokenizer_fingerprint(reloaded) == tokenizer_fingerprint(unused)


def test_another_max_length_misses_the_cache(bert_tokenizer, calls, tmp_path):
    cache = tmp_path / "cache"
    long = encode(bert_tokenizer, TEXTS, None, max_length=64, source_digest="d", cache=cache)
    short = encode(bert_tokenizer, TEXTS, None, max_length=8, source_digest="d", cache=cache)
    assert calls["n"] == 2
    assert max(short.lengths) == 8 < max(long.lengths)
    assert len(list((cache / "tokens").glob("*.npz"))) == 2


def test_a_changed_file_digest_misses_the_cache(bert_tokenizer, calls, tmp_path):
    cache = tmp_path / "cache"
    encode(bert_tokenizer, TEXTS, None, 64, source_digest="before", cache=cache)
    changed = TEXTS[:5] + ["zeta kappa omega"] + TEXTS[6:]
    after = encode(bert_tokenizer, changed, None, 64, source_digest="after", cache=cache)
    assert calls["n"] == 2
    expected = bert_tokenizer(changed, truncation=True, max_length=64)["input_ids"]
    assert [list(ids) for ids in after.input_ids] == expected


def test_no_cache_without_a_digest(bert_tokenizer, calls, tmp_path):
    cache = tmp_path / "cache"
    encode(bert_tokenizer, TEXTS, None, 64, source_digest=None, cache=cache)
    encode(bert_tokenizer, TEXTS, None, 64, source_digest=None, cache=cache)
    assert calls["n"] == 2 and not (cache / "tokens").exists()


def test_pairs_and_single_texts_do_not_share_a_cache_entry(bert_tokenizer, calls, tmp_path):
    cache = tmp_path / "cache"
    single = encode(bert_tokenizer, TEXTS, None, 64, source_digest="d", cache=cache)
    paired = encode(bert_tokenizer, TEXTS, PAIRS, 64, source_digest="d", cache=cache)
    assert calls["n"] == 2
    assert all(len(p) > len(s) for p, s in zip(paired.input_ids, single.input_ids))


def test_truncation_to_max_length(bert_tokenizer):
    long_text = " ".join(["citation intent background"] * 40)
    encoded = encode(bert_tokenizer, [long_text, "the model"], None, max_length=16)
    assert encoded.lengths.tolist()[0] == 16 and encoded.lengths.tolist()[1] < 16
    ids = encoded.input_ids[0]
    assert ids[0] == bert_tokenizer.cls_token_id and ids[-1] == bert_tokenizer.sep_token_id


def test_truncated_pairs_stay_within_max_length(bert_tokenizer):
    long_text = " ".join(["citation intent background"] * 40)
    encoded = encode(bert_tokenizer, [long_text, "a"], [long_text, "b"], max_length=20)
    assert encoded.lengths.max() <= 20 and encoded.lengths[0] == 20


def test_token_type_ids_for_pairs_with_a_bert_tokenizer(tiny_models, tmp_path):
    # the fixture saves a generic fast tokenizer; loaded as a BERT tokenizer it returns segment ids
    tokenizer = BertTokenizerFast.from_pretrained(tiny_models["bert"])
    encoded = encode(tokenizer, TEXTS, PAIRS, max_length=512)  # long enough: nothing truncated
    assert encoded.token_type_ids is not None
    for text, pair, ids, types in zip(TEXTS, PAIRS, encoded.input_ids, encoded.token_type_ids):
        n_first = len(tokenizer(text)["input_ids"])  # [CLS] text [SEP]
        assert len(types) == len(ids)
        assert types[:n_first].tolist() == [0] * n_first
        assert types[n_first:].tolist() == [1] * (len(ids) - n_first) and len(ids) > n_first
    # and the cache keeps them
    cached_a = encode(tokenizer, TEXTS, PAIRS, 512, source_digest="d", cache=tmp_path / "cache")
    cached_b = encode(tokenizer, TEXTS, PAIRS, 512, source_digest="d", cache=tmp_path / "cache")
    assert same_ids(cached_a.token_type_ids, cached_b.token_type_ids)
    assert same_ids(cached_b.token_type_ids, encoded.token_type_ids)
    batch = collate(cached_b, np.arange(4), tokenizer.pad_token_id)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["token_type_ids"].max().item() == 1


def test_a_tokenizer_without_token_types_gives_none(bert_tokenizer, tmp_path):
    if "token_type_ids" in bert_tokenizer.model_input_names:
        pytest.skip("this transformers version returns token types from a generic tokenizer")
    encoded = encode(bert_tokenizer, TEXTS, PAIRS, 64, source_digest="d", cache=tmp_path / "cache")
    cached = encode(bert_tokenizer, TEXTS, PAIRS, 64, source_digest="d", cache=tmp_path / "cache")
    assert encoded.token_type_ids is None and cached.token_type_ids is None
    assert "token_type_ids" not in collate(cached, np.arange(3), bert_tokenizer.pad_token_id)


def test_fingerprint_tells_tokenizers_apart(tiny_models):
    bert = AutoTokenizer.from_pretrained(tiny_models["bert"])
    roberta = AutoTokenizer.from_pretrained(tiny_models["roberta"])
    assert tokenizer_fingerprint(bert) != tokenizer_fingerprint(roberta)


def test_another_tokenizer_misses_the_cache(tiny_models, tmp_path):
    cache = tmp_path / "cache"
    bert = AutoTokenizer.from_pretrained(tiny_models["bert"])
    roberta = AutoTokenizer.from_pretrained(tiny_models["roberta"])
    a = encode(bert, TEXTS, None, 64, source_digest="d", cache=cache)
    b = encode(roberta, TEXTS, None, 64, source_digest="d", cache=cache)
    assert [list(x) for x in b.input_ids] == roberta(TEXTS, truncation=True, max_length=64)["input_ids"]
    assert not same_ids(a.input_ids, b.input_ids)


def test_word_ids_group_subword_pieces_for_wordpiece_and_byte_level_bpe(tiny_models):
    from transformers import AutoTokenizer

    from tartan.data.encoding import encode

    texts = ["contrast baselines motivation backgrounds", "extends auxiliary citations"]
    for kind, continues in (("bert", lambda piece: piece.startswith("##")),
                            ("roberta", lambda piece: not piece.startswith("\u0120"))):
        tokenizer = AutoTokenizer.from_pretrained(tiny_models[kind])
        encoded = encode(tokenizer, texts, None, 64, words=True)
        for ids, words in zip(encoded.input_ids, encoded.word_ids):
            pieces = tokenizer.convert_ids_to_tokens(ids.tolist())
            real = [i for i, w in enumerate(words) if w >= 0]
            assert [words[i] for i in real] == sorted(words[i] for i in real)  # numbered along the row
            assert all(words[i] < 0 for i, p in enumerate(pieces) if p in tokenizer.all_special_tokens)
            for previous, current in zip(real, real[1:]):
                same_word = words[current] == words[previous]
                assert same_word == continues(pieces[current]), (kind, pieces)
            assert any(words[a] == words[b] for a, b in zip(real, real[1:]))  # some word has several pieces


def test_a_tokenizer_that_truncates_on_the_left_does_not_share_a_cache_entry(tiny_models, tmp_path):
    right = AutoTokenizer.from_pretrained(tiny_models["bert"])
    left = AutoTokenizer.from_pretrained(tiny_models["bert"], truncation_side="left")
    long_texts = [" ".join(TEXTS)]  # longer than 16 tokens: each side keeps another end
    kept_right = encode(right, long_texts, None, 16, source_digest="d", cache=tmp_path)
    kept_left = encode(left, long_texts, None, 16, source_digest="d", cache=tmp_path)
    assert not same_ids(kept_right.input_ids, kept_left.input_ids)
    assert same_ids(kept_left.input_ids, encode(left, long_texts, None, 16).input_ids)


def test_an_entry_of_another_row_count_under_the_same_key_is_tokenised_again(bert_tokenizer, tmp_path):
    encode(bert_tokenizer, TEXTS, None, 64, source_digest="d", cache=tmp_path)
    fewer = encode(bert_tokenizer, TEXTS[:-1], None, 64, source_digest="d", cache=tmp_path)
    assert same_ids(fewer.input_ids, encode(bert_tokenizer, TEXTS[:-1], None, 64).input_ids)
