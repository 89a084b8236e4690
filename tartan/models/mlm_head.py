"""The masked-LM head: transform (Linear from the hidden width to the word-embedding width, activation,
LayerNorm) and a vocabulary decoder tied to the body's word embeddings, with its own bias. The two
widths differ in ALBERT and ELECTRA-small, which factorise their embeddings. Loaded from the checkpoint
where it has one (BERT's `cls.predictions.*`, RoBERTa's `lm_head.*`, ...), else created and
initialised; the embedded MiniLM has none. It scores only the positions it is given: the vocabulary
projection is most of the cost of an MLM step on a small model, so it is never computed for
unselected tokens."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..data.masking import IGNORE
from ..errors import TartanError


class _Layout(NamedTuple):
    """Where a model family keeps its MLM head in a checkpoint (names of the transform's dense and
    norm layers and of the decoder's bias), and which activation its transform applies: the one a
    config attribute names, else a fixed one."""
    dense: str
    norm: str
    bias: str
    activation_key: str | None = None
    activation: str = "gelu"
    optional: tuple[str, ...] = ()  # absent where the family's layers have no bias: zero is the same function


_LAYOUTS = [
    _Layout("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias",
            "hidden_act"),  # BERT; DeBERTa v1/v2 with their legacy head
    _Layout("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),  # RoBERTa, XLM-R, MPNet
    _Layout("vocab_transform", "vocab_layer_norm", "vocab_projector.bias", "activation"),  # DistilBERT
    _Layout("predictions.dense", "predictions.LayerNorm", "predictions.bias", "hidden_act"),  # ALBERT
    _Layout("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head.bias"),  # ELECTRA, ConvBERT
    _Layout("lm_predictions.lm_head.dense", "lm_predictions.lm_head.LayerNorm", "lm_predictions.lm_head.bias",
            "hidden_act"),  # DeBERTa v1/v2/v3
    _Layout("head.dense", "head.norm", "decoder.bias", "classifier_activation",
            optional=("dense.bias", "norm.bias", "bias")),  # ModernBERT
]


class MaskedLMHead(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        config = body.config
        try:
            embeddings = body.get_input_embeddings()
        except (AttributeError, NotImplementedError):
            embeddings = None
        hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
        if embeddings is None or hidden is None or getattr(config, "vocab_size", None) is None:
            raise TartanError(f"model type {config.model_type!r} cannot carry an MLM head "
                              "(it needs word embeddings, hidden_size and vocab_size)")
        width = embeddings.weight.shape[1]
        self.dense = nn.Linear(hidden, width)
        self.activation = _activation(getattr(config, "hidden_act", None) or getattr(config, "classifier_activation", None)
                                      or getattr(config, "activation", None) or "gelu")
        self.norm = nn.LayerNorm(width, eps=getattr(config, "layer_norm_eps", None) or getattr(config, "norm_eps", 1e-12))
        self.bias = nn.Parameter(torch.zeros(embeddings.weight.shape[0]))
        # tied: the decoder is the word-embedding matrix itself, not a copy
        self.embeddings = [embeddings]  # a list keeps it out of this module's parameters and state
        init = getattr(config, "initializer_range", 0.02)
        nn.init.normal_(self.dense.weight, std=init)
        nn.init.zeros_(self.dense.bias)

    @property
    def decoder_weight(self) -> torch.Tensor:
        return self.embeddings[0].weight

    def forward(self, hidden_states: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        """Logits at the selected positions only (batch["mlm_positions"], flat row-major indices the
        host chose at collate time, gathered without the device deciding any shape; or, from a batch
        with "mlm_labels" only, where those are not -100); at every position otherwise."""
        if batch is not None and "mlm_positions" in batch:
            hidden_states = hidden_states.reshape(-1, hidden_states.shape[-1]).index_select(0, batch["mlm_positions"])
        elif batch is not None and "mlm_labels" in batch:
            hidden_states = hidden_states.reshape(-1, hidden_states.shape[-1])[batch["mlm_labels"].reshape(-1) != IGNORE]
        x = self.norm(self.activation(self.dense(hidden_states)))
        return nn.functional.linear(x, self.decoder_weight, self.bias)


def load_mlm_head(body: nn.Module, model_path: str | Path | None) -> tuple[MaskedLMHead, bool]:
    """(head, loaded): the checkpoint's MLM head weights when it has them, else a fresh head."""
    head = MaskedLMHead(body)
    if model_path is None:
        return head, False
    state = _checkpoint_tensors(Path(model_path))
    for layout in _LAYOUTS:
        keys = {"dense.weight": f"{layout.dense}.weight", "dense.bias": f"{layout.dense}.bias",
                "norm.weight": f"{layout.norm}.weight", "norm.bias": f"{layout.norm}.bias", "bias": layout.bias}
        if all(theirs in state for mine, theirs in keys.items() if mine not in layout.optional):
            own = head.state_dict()
            head.load_state_dict({mine: state[theirs] if theirs in state else torch.zeros_like(own[mine])
                                  for mine, theirs in keys.items()})
            configured = getattr(body.config, layout.activation_key, None) if layout.activation_key else None
            head.activation = _activation(configured or layout.activation)
            if getattr(body.config, "tie_word_embeddings", True) is False:
                print(f"warning: model {str(model_path)!r} keeps a masked-LM decoder of its own (tie_word_embeddings: "
                      "false); tartan's head decodes with the word embeddings, so that decoder is not used",
                      file=sys.stderr)
            return head, True
    return head, False


def _activation(name):
    return ACT2FN[name] if isinstance(name, str) else name


def _local_folder(model_path: Path) -> Path | None:
    """The folder holding a model's files: the path itself, or the local cache of a hub name."""
    if model_path.is_dir():
        return model_path
    try:
        from transformers.utils import cached_file

        return Path(cached_file(str(model_path), "config.json")).parent
    except (OSError, ValueError):
        return None


def _checkpoint_tensors(model_path: Path) -> dict[str, torch.Tensor]:
    """The tensors whose names belong to an MLM head, from safetensors files, else from PyTorch
    .bin files loaded with weights_only (no arbitrary pickle)."""
    from safetensors import safe_open

    folder = _local_folder(model_path)
    if folder is None:
        return {}
    wanted = tuple(name for layout in _LAYOUTS for name in (layout.dense, layout.norm, layout.bias))
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(wanted):
                    tensors[_current_name(key)] = handle.get_tensor(key)
    if not tensors:
        for file in sorted(folder.glob("pytorch_model*.bin")):
            state = torch.load(file, map_location="cpu", weights_only=True)
            tensors.update({_current_name(k): v for k, v in state.items() if k.startswith(wanted)})
    return tensors


def _current_name(key: str) -> str:
    """A LayerNorm's weight and bias as TensorFlow ports name them (bert-base-uncased's checkpoint:
    `LayerNorm.gamma`, `.beta`), renamed as transformers renames them when it loads the body."""
    stem, dot, last = key.rpartition(".")
    return stem + dot + {"gamma": "weight", "beta": "bias"}.get(last, last)
