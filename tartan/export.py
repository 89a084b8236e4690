"""A finished run as a standard Hugging Face sequence classifier, for sharing or serving without
tartan: `AutoModelForSequenceClassification.from_pretrained(OUT)` loads it, and it scores as the run's
model does (checked before anything is written). The run's head (first token, Linear, tanh,
Linear) is the classification head of BERT-, ALBERT-, RoBERTa- and MPNet-style models, and of
DeBERTa's once its pooler's activation is tanh; other families' heads compute something else
(DistilBERT's ReLU, ELECTRA's GELU, ModernBERT's norm), so their runs are refused."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import TartanError

# per model type: where its sequence classifier keeps the head's first and second Linear, and the
# config settings under which its head computes the run's
_CLASSIFIER_LAYOUTS: dict[str, tuple[str, str, dict]] = {
    "bert": ("bert.pooler.dense", "classifier", {}),
    "albert": ("albert.pooler", "classifier", {}),
    **{model_type: ("classifier.dense", "classifier.out_proj", {})
       for model_type in ("roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "roberta-prelayernorm")},
    **{model_type: ("pooler.dense", "classifier", {"pooler_hidden_act": "tanh"})
       for model_type in ("deberta", "deberta-v2")},
}
# how closely the exported model must reproduce the run's logits (fp32, same inputs)
_TOLERANCE = 1e-4
_CHECK_TEXTS = ["a short check", "a longer sentence that the exported classifier and the run's model both score"]


def export_classifier(run_dir: Path, output: Path) -> dict:
    """Write the finished run at `run_dir` to `output` as an AutoModelForSequenceClassification
    folder with its tokenizer and label names; returns {model_type, labels, max_difference}."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from .inference import load_finished

    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise TartanError("exists and is not empty: choose a new folder", output)
    config, model, tokenizer, meta = load_finished(run_dir)
    model_type = model.body.config.model_type
    if model_type not in _CLASSIFIER_LAYOUTS:
        raise TartanError(f"cannot export a {model_type!r} run: its Hugging Face classification head computes "
                          f"something else than the run's (exportable: {', '.join(sorted(_CLASSIFIER_LAYOUTS))})",
                          run_dir)
    first, second, settings = _CLASSIFIER_LAYOUTS[model_type]
    labels = list(meta["labels"])
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its report of the classifier weights it initialises: set next
    try:
        classifier = AutoModelForSequenceClassification.from_pretrained(
            Path(run_dir) / "model", num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, trust_remote_code=config.trust_remote_code,
            **settings)
    finally:
        hf_logging.set_verbosity(verbosity)
    head = model.heads[config.end_task]
    with torch.no_grad():
        classifier.get_submodule(first).load_state_dict(head.dense.state_dict())
        classifier.get_submodule(second).load_state_dict(head.out_proj.state_dict())
    classifier.eval()
    difference = _max_difference(model, config.end_task, classifier, tokenizer)
    if not difference <= _TOLERANCE:
        raise TartanError(f"the exported {model_type!r} classifier does not reproduce the run's logits (largest "
                          f"difference {difference:.3g}); nothing written", run_dir)
    classifier.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return {"model_type": model_type, "labels": labels, "max_difference": difference}


def _max_difference(model, end_task: str, classifier, tokenizer) -> float:
    inputs = tokenizer(_CHECK_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(end_task, dict(inputs))
        logits = classifier(**inputs).logits
    return float((expected - logits).abs().max())
