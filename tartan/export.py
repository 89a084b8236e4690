"""A finished run as a standard Hugging Face model, for sharing or serving without tartan:
`AutoModelForSequenceClassification.from_pretrained(OUT)` loads a classification or regression run,
`AutoModelForQuestionAnswering` an extractive QA run, and it scores as the run's model does (checked
before anything is written). The run's head (first token, Linear, tanh,
Linear) is the classification head of BERT-, ALBERT-, RoBERTa- and MPNet-style models, and of
DeBERTa's once its pooler's activation is tanh; other families' heads compute something else
(DistilBERT's ReLU, ELECTRA's GELU, ModernBERT's norm), so their runs are refused."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from . import rundir
from .errors import TartanError, first_line
from .models.body import quiet_transformers

# per model type: where its sequence classifier keeps the head's first and second Linear, and the
# config settings under which its head computes the run's
_POOLER = {model_type: (f"{prefix}.pooler.dense", "classifier", {}) for model_type, prefix in (
    ("bert", "bert"), ("megatron-bert", "bert"), ("ernie", "ernie"), ("rembert", "rembert"), ("gte", "gte"),
    ("nomic_bert", "nomic_bert"))}
_ROBERTA_HEAD = {model_type: ("classifier.dense", "classifier.out_proj", {}) for model_type in (
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "roberta-prelayernorm", "ibert", "mpnet")}
_CLASSIFIER_LAYOUTS: dict[str, tuple[str, str, dict]] = {
    **_POOLER, **_ROBERTA_HEAD,
    "albert": ("albert.pooler", "classifier", {}),
    "mobilebert": ("mobilebert.pooler.dense", "classifier", {"classifier_activation": True}),  # else no dense at all
    **{model_type: ("pooler.dense", "classifier", {"pooler_hidden_act": "tanh", "pooler_hidden_size": None})
       for model_type in ("deberta", "deberta-v2")},  # None: the body's hidden size, as the run's head
}
# how closely the exported model must reproduce the run's logits (fp32, same inputs)
_TOLERANCE = 1e-4
_CHECK_TEXTS = ["a short check", "a longer sentence that the exported classifier and the run's model both score"]


def export_classifier(run_dir: Path, output: Path, device: str | None = None) -> dict:
    """Write the finished run at `run_dir` to `output` as an AutoModelForSequenceClassification
    folder with its tokenizer and label names (AutoModelForMultipleChoice, AutoModelForQuestionAnswering
    for those end tasks); returns {model_type, architecture, labels, max_difference}."""
    from .inference import load_finished

    run_dir, output = Path(run_dir), Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TartanError("exists and is not an empty folder: choose a new one", output)
    rundir.check_writable_folder(output.parent, "the export's parent folder")
    config, model, tokenizer, meta = load_finished(run_dir, device)
    if not type(model.body).__module__.startswith("transformers."):
        # a model of its own code may reuse a built-in model type's name and compute something else
        raise TartanError(f"cannot export a run of a model that ships its own code ({type(model.body).__name__})",
                          run_dir)
    kind = meta.get("type", "classification")
    if kind not in ("classification", "regression", "span", "multiple_choice"):
        raise TartanError(f"exports sequence classifiers (classification, regression), multiple-choice and "
                          f"extractive QA models; this run's end task is of type {kind!r}", run_dir)
    regression = kind == "regression"
    labels = [] if kind in ("span", "multiple_choice") else ["score"] if regression else list(meta["labels"])
    if kind == "span":
        classifier = build_question_answering(run_dir / "model", model.heads[config.end_task], run_dir)
    elif kind == "multiple_choice":
        classifier = build_multiple_choice(run_dir / "model", model.heads[config.end_task], run_dir)
    else:
        classifier = build_classifier(run_dir / "model", model.heads[config.end_task], labels, run_dir,
                                      problem_type="regression" if regression else None)
    device = next(model.parameters()).device
    classifier.to(device)
    # one at a time: no pad token needed
    inputs = [tokenizer(*((text, text) if kind == "span" else (text,)), truncation=True,
                        max_length=config.data.max_length, return_tensors="pt").to(device) for text in _CHECK_TEXTS]
    if kind == "multiple_choice":  # a row of choices: a context with each choice (alike without a pad token)
        padded = tokenizer.pad_token_id is not None
        choices = [f"{_CHECK_TEXTS[1]} {'and more ' * c if padded else ''}" for c in range(meta["choices"])]
        inputs = [tokenizer([_CHECK_TEXTS[0]] * meta["choices"], choices, truncation=True,
                            max_length=config.data.max_length, padding=padded, return_tensors="pt").to(device)]
        difference = max_multiple_choice_difference(model, config.end_task, classifier, inputs)
    else:
        difference = max_difference(model, config.end_task, classifier, inputs)
    if not difference <= _TOLERANCE:
        raise TartanError(f"the exported {classifier.config.model_type!r} classifier does not reproduce the run's "
                          f"logits (largest difference {difference:.3g}); nothing written", run_dir)
    # written beside the destination and moved into place, so a failure leaves no half folder
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        classifier.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        rundir.umask_permissions(staging)
        if output.exists():
            output.rmdir()  # empty, as checked above
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"model_type": classifier.config.model_type, "architecture": type(classifier).__name__, "labels": labels,
            "max_difference": difference}


def build_classifier(model_path: Path, head: nn.Module, labels: list[str], where: Path | None = None,
                     problem_type: str | None = None) -> nn.Module:
    """The family's AutoModelForSequenceClassification with the body at `model_path` and `head`'s
    weights in its classifier layers, in eval mode. `problem_type="regression"`: one output, a
    score (transformers then trains it with mean squared error, as the run did)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_type = AutoConfig.from_pretrained(model_path).model_type
    if model_type not in _CLASSIFIER_LAYOUTS:
        raise TartanError(f"cannot export a {model_type!r} run: its Hugging Face classification head computes "
                          f"something else than the run's (exportable: {', '.join(sorted(_CLASSIFIER_LAYOUTS))})",
                          where)
    first, second, settings = _CLASSIFIER_LAYOUTS[model_type]
    hidden_size = head.dense.in_features
    settings = {key: hidden_size if value is None else value for key, value in settings.items()}
    try:
        with quiet_transformers():  # its report of the classifier weights it initialises: set next
            classifier = AutoModelForSequenceClassification.from_pretrained(
                model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)},
                **({"problem_type": problem_type} if problem_type else {}), **settings)
        with torch.no_grad():
            classifier.get_submodule(first).load_state_dict(head.dense.state_dict())
            classifier.get_submodule(second).load_state_dict(head.out_proj.state_dict())
    except (OSError, ValueError, AttributeError, RuntimeError) as error:
        raise TartanError(f"cannot export the {model_type!r} run as a sequence classifier: {first_line(error)}",
                          where) from None
    return classifier.eval()


def max_difference(model: nn.Module, end_task: str, classifier: nn.Module, inputs: list[dict]) -> float:
    """The largest absolute difference between the run's logits and the exported model's on `inputs`
    (a QA model's start and end logits side by side, as the run's head gives them)."""
    model.eval()

    def exported(batch) -> torch.Tensor:
        output = classifier(**batch)
        if hasattr(output, "start_logits"):
            return torch.stack([output.start_logits, output.end_logits], -1)
        return output.logits

    with torch.no_grad():
        return max(float((model(end_task, dict(batch)) - exported(batch)).abs().max()) for batch in inputs)


def max_multiple_choice_difference(model: nn.Module, end_task: str, exported: nn.Module, inputs: list[dict]) -> float:
    """The same for a multiple-choice model, which takes a row's choices as (rows, choices, tokens)."""
    model.eval()
    with torch.no_grad():
        return max(float((model(end_task, dict(batch))
                          - exported(**{k: v[None] for k, v in batch.items()}).logits).abs().max()) for batch in inputs)


def build_multiple_choice(model_path: Path, head: nn.Module, where: Path | None = None) -> nn.Module:
    """The family's AutoModelForMultipleChoice with the run's head in its pooler and classifier (BERT
    and RoBERTa alike score a choice from the pooled first token: dense, tanh, Linear(H, 1))."""
    from transformers import AutoModelForMultipleChoice

    try:
        with quiet_transformers():
            model = AutoModelForMultipleChoice.from_pretrained(model_path)
        pooler = model.get_submodule(f"{model.base_model_prefix}.pooler.dense")
        with torch.no_grad():
            pooler.load_state_dict(head.dense.state_dict())
            model.classifier.load_state_dict(head.out_proj.state_dict())
    except (OSError, ValueError, AttributeError, RuntimeError) as error:
        raise TartanError(f"cannot export the run as a multiple-choice model: {first_line(error)}", where) from None
    return model.eval()


def build_question_answering(model_path: Path, head: nn.Module, where: Path | None = None) -> nn.Module:
    """The family's AutoModelForQuestionAnswering with the body at `model_path` and the run's span
    head as its `qa_outputs` (the layer every family's QA model puts on the token vectors)."""
    from transformers import AutoModelForQuestionAnswering

    try:
        with quiet_transformers():
            model = AutoModelForQuestionAnswering.from_pretrained(model_path)
        with torch.no_grad():
            model.qa_outputs.load_state_dict(head.qa_outputs.state_dict())
    except (OSError, ValueError, AttributeError, RuntimeError) as error:
        raise TartanError(f"cannot export the run as a question-answering model: {first_line(error)}", where) from None
    return model.eval()
