"""Shared fixtures: tiny random encoders (built once per session, on first use), a small labelled task
folder, an isolated token cache, and the toy task with a tiny body and head. The plain helpers they
use live in helpers.py."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import (LABELS, MARKERS, MORE_FAMILIES, SHARED_DATA, WORDS, build_multitask,  # noqa: F401
                     custom_code_model, make_texts, make_tiny_model, tiny_overrides, write_task)


class TinyModels(dict):
    """kind -> folder of a tiny random model of that family, built the first time a test asks for it.
    With TARTAN_TEST_MODELS set, the folders are kept there and reused by later sessions (the
    mutation runner's children each start a session)."""

    def __init__(self, root: Path, keep: Path | None):
        super().__init__()
        self.root, self.keep = root, keep

    def __missing__(self, kind: str) -> Path:
        # built inside whichever test asks first: its stderr must not carry transformers' save bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if self.keep is not None:
            folder = self.keep / kind
            if not (folder / "config.json").is_file():
                self.keep.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(dir=self.keep, prefix=f".{kind}-"))
                make_tiny_model(kind, staging)
                try:
                    staging.rename(folder)
                except OSError:  # another session put it there first
                    shutil.rmtree(staging, ignore_errors=True)
        else:
            folder = make_tiny_model(kind, self.root / kind)
        self[kind] = folder
        return folder

    def __contains__(self, kind) -> bool:  # every family can be built
        return kind in ("bert", "roberta", "distilbert", "deberta", *MORE_FAMILIES)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    keep = os.environ.get("TARTAN_TEST_MODELS")
    return TinyModels(tmp_path_factory.mktemp("models"), Path(keep) if keep else None)


@pytest.fixture()
def data_dir(tmp_path) -> Path:
    write_task(tmp_path / "data" / "toy")
    write_task(tmp_path / "data" / "toy_pairs", pairs=True, seed=1)
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own token cache and no user data directory."""
    monkeypatch.setenv("TARTAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TARTAN_DATA", raising=False)


@pytest.fixture()
def multitask_setup(tiny_models, data_dir):
    """The toy classification task and a tiny BERT body without dropout, with its head (as training
    builds them); helpers.build_multitask builds other variants."""
    _, task, model = build_multitask(tiny_models["bert"], data_dir)
    return task, model
