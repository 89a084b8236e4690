"""Tokenisation, cached on disk: the key is the source file's digest, the tokenizer's fingerprint and
the maximum length, so a second run (or another seed) never tokenises the same file again."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..rundir import check_writable_folder

# part of every cache key, with the file's digest: a change to how files are read into texts (3:
# csv quoted fields keep their line breaks, tsv quotation marks) must not serve the old texts' tokens
CACHE_FORMAT = "3"


@dataclass
class Encoded:
    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    # per token the index of its word in the row, -1 at special tokens (for whole-word masking)
    word_ids: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def tokenizer_fingerprint(tokenizer) -> str:
    cached = getattr(tokenizer, "_tartan_fingerprint", None)
    if cached:
        return cached
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # truncation and padding are call-time state a tokenizer keeps after use: not its identity
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        digest.update(json.dumps(state, sort_keys=True).encode())
    else:
        digest.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    # which end a long text loses (`truncation_side` of tokenizer_config.json) changes its tokens; the
    # default leaves the digest as it was, so that caches written before stay valid
    if getattr(tokenizer, "truncation_side", "right") != "right":
        digest.update(f"truncation_side={tokenizer.truncation_side}".encode())
    tokenizer._tartan_fingerprint = digest.hexdigest()
    return tokenizer._tartan_fingerprint


def encode(tokenizer, texts: list[str], text_pairs: list[str] | None, max_length: int,
           source_digest: str | None = None, cache: Path | None = None, words: bool = False) -> Encoded:
    """Token ids of `texts` (with `text_pairs` as second segments), truncated to `max_length`, and
    with `words` the word index of every token. With `cache` and `source_digest` the result is read
    from / written to the cache."""
    path = None
    if cache is not None and source_digest is not None:
        key = hashlib.sha256(f"{CACHE_FORMAT}|{source_digest}|{tokenizer_fingerprint(tokenizer)}|{max_length}|"
                             f"{text_pairs is not None}|{words}".encode()).hexdigest()
        path = Path(cache) / "tokens" / f"{key}.npz"
        if path.is_file():
            try:
                cached = _load(path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                cached = None  # a damaged entry (a full disk, a copy cut short): tokenised again and replaced
            # one file read two ways (a pair task's train file as TAPT's texts, which skip a blank
            # pair, and as DAPT's passages, which keep it) shares a key: other rows are not these
            if cached is not None and len(cached) == len(texts):
                return cached
    batch = tokenizer(texts, text_pairs, truncation=True, max_length=max_length,
                      return_attention_mask=False)
    input_ids = [np.asarray(ids, dtype=np.int32) for ids in batch["input_ids"]]
    type_ids = batch.get("token_type_ids")
    encoded = Encoded(input_ids, [np.asarray(t, dtype=np.int8) for t in type_ids] if type_ids is not None else None,
                      [_word_index(batch, i) for i in range(len(input_ids))] if words else None)
    if path is not None:
        _save(path, encoded)
    return encoded


def _word_index(batch, row: int) -> np.ndarray:
    """Words numbered 0, 1, ... along the row across both segments; -1 at special tokens."""
    index = np.full(len(batch["input_ids"][row]), -1, dtype=np.int32)
    previous, current = None, -1
    for position, (word, sequence) in enumerate(zip(batch.word_ids(row), batch.sequence_ids(row))):
        if word is None:
            continue
        if (sequence, word) != previous:
            previous, current = (sequence, word), current + 1
        index[position] = current
    return index


def _save(path: Path, encoded: Encoded) -> None:
    check_writable_folder(path.parent, "the tokenisation cache (TARTAN_CACHE)")
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum(encoded.lengths)])
    arrays = {"ids": np.concatenate(encoded.input_ids) if len(encoded) else np.zeros(0, np.int32),
              "offsets": offsets}
    if encoded.token_type_ids is not None:
        arrays["type_ids"] = np.concatenate(encoded.token_type_ids) if len(encoded) else np.zeros(0, np.int8)
    if encoded.word_ids is not None:
        arrays["word_ids"] = np.concatenate(encoded.word_ids) if len(encoded) else np.zeros(0, np.int32)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        np.savez(out, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> Encoded:
    with np.load(path, allow_pickle=False) as data:
        offsets = data["offsets"]
        ids = np.split(data["ids"], offsets[1:-1])
        type_ids = np.split(data["type_ids"], offsets[1:-1]) if "type_ids" in data else None
        word_ids = np.split(data["word_ids"], offsets[1:-1]) if "word_ids" in data else None
    return Encoded(ids, type_ids, word_ids)
