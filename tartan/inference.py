"""Using a finished run: evaluate its end task on a split, predict labels for a file."""
from __future__ import annotations

import json
import sys
from pathlib import Path


from . import rundir
from .data.encoding import encode
from .data.readers import read_rows
from .errors import TartanError
from .models.body import accepts_token_types, load_body
from .models.heads import load_head_meta, load_head_weights
from .models.multitask import MultiTaskModel
from .run import build_task, load_run_config
from .training.device import make_accelerator, resolve_device
from .tasks import task_types
from .tasks.classification import logits_of


def load_finished(run_dir: Path, device: str | None = None):
    """(config, model with the end task's head on `device`, tokenizer, head meta) of a finished run;
    `device` None: the run's own device setting (auto, unless it named one)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if not (run_dir / rundir.MODEL).is_dir() or not (run_dir / rundir.HEADS).is_dir():
        raise TartanError("run has not finished (no model/ and heads/): train it first", run_dir)
    body, tokenizer = load_body(str(run_dir / rundir.MODEL), config.trust_remote_code)
    meta = load_head_meta(run_dir / rundir.HEADS, config.end_task)
    kind = meta.get("type", "classification")
    if kind not in task_types or not hasattr(task_types.get(kind), "head_from_meta"):
        raise TartanError(f"a head of type {kind!r}: not the end task of a run tartan can load",
                          run_dir / rundir.HEADS / f"{config.end_task}.json")
    head = task_types.get(kind).head_from_meta(body.config.hidden_size, meta)
    load_head_weights(head, run_dir / rundir.HEADS, config.end_task)
    model = MultiTaskModel(body, {config.end_task: head}, token_types=accepts_token_types(body))
    if device is not None:
        config.device = device
    return config, model.to(resolve_device(config.device)).eval(), tokenizer, meta


def outputs_of(meta: dict) -> int:
    """How many outputs the end task's head has: one per label, or one score."""
    return 1 if meta.get("type") == "regression" else len(meta["labels"])


def check_pairs(meta: dict, has_pairs: bool, where: Path) -> None:
    """A run trained on text pairs scores pairs, one trained on texts scores texts: the other would be
    scored without a segment it learnt from, or with one it never saw. Runs saved before heads
    recorded it are not checked."""
    trained = meta.get("pairs")
    if trained is not None and trained != has_pairs:
        raise TartanError("the run was trained on " + ("text pairs (text, text_pair)" if trained else "texts alone")
                          + " and these rows " + ("have a text_pair" if has_pairs else "have none"), where)


def evaluate_run(run_dir: Path, split: str = "test", data_dir: str | None = None,
                 device: str | None = None) -> dict[str, float]:
    config, model, tokenizer, meta = load_finished(run_dir, device)
    if data_dir is not None:
        config.data_dir = data_dir
    task = build_task(config.end_task, meta.get("type", "classification"), {}, config, tokenizer)
    # the head's outputs are the labels it was trained on, in that order: data with other labels
    # would be scored against the wrong classes
    if "labels" in meta and list(task.label_names) != list(meta["labels"]):
        raise TartanError(f"the data's labels {list(task.label_names)} are not the labels the run's head was "
                          f"trained on {list(meta['labels'])}", Path(config.data_dir) / config.end_task)
    if split not in task.splits:
        raise TartanError(f"task {config.end_task!r} has no {split} split", Path(config.data_dir) / config.end_task)
    if hasattr(task, "has_pairs"):
        check_pairs(meta, task.has_pairs, Path(config.data_dir) / config.end_task)
    return task.evaluate(model, split, make_accelerator(config.train.precision, config.device).autocast)


def predict_file(run_dir: Path, path: Path, output=None, batch_size: int = 64, device: str | None = None) -> int:
    """Write one JSON line per input row: the predicted label name and its probability (or the
    predicted score, for a regression task)."""
    config, model, tokenizer, meta = load_finished(run_dir, device)
    kind = meta.get("type", "classification")
    if kind == "span":
        return _predict_answers(config, model, tokenizer, Path(path), output, batch_size)
    if kind == "multiple_choice":
        from .tasks.multiple_choice import predict_choices

        out = output or sys.stdout
        predictions = predict_choices(model, config.end_task, tokenizer, Path(path), meta["choices"],
                                      config.data.max_length, batch_size,
                                      make_accelerator(config.train.precision, config.device).autocast)
        for prediction in predictions:
            out.write(json.dumps(prediction) + "\n")
        return len(predictions)
    if kind not in ("classification", "regression"):
        raise TartanError(f"tartan predict reads texts (and pairs), contexts with choices, or questions with "
                          f"contexts; this run's end task is of type {kind!r}", run_dir)
    texts, pairs, lines = [], [], []
    for line, row in read_rows(Path(path)):
        if not isinstance(row.get("text"), str):
            raise TartanError("missing or non-string field 'text'", path, line)
        if row.get("text_pair") is not None and not isinstance(row["text_pair"], str):
            raise TartanError(f"field 'text_pair' must be a string, got {type(row['text_pair']).__name__}", path, line)
        texts.append(row["text"])
        pairs.append(row.get("text_pair"))
        lines.append(line)
    if Path(path).suffix.lower() in (".txt", ".jsonl"):
        # a row a line: the reader skips a blank one, so the output's lines are no longer the input's
        blank = sorted(set(range(1, max(lines, default=0) + 1)) - set(lines))
        if blank:
            shown = ", ".join(map(str, blank[:5])) + (", ..." if len(blank) > 5 else "")
            print(f"warning: {path}: skipped {len(blank)} blank line(s) (line {shown}): the output has a line per "
                  "non-blank line", file=sys.stderr)
    has_pairs = any(p is not None for p in pairs)
    if has_pairs and None in pairs:  # as training refuses it: a row would be scored without its pair
        raise TartanError("missing field 'text_pair' (other rows of this file have one)", path, lines[pairs.index(None)])
    check_pairs(meta, has_pairs, Path(path))
    encoded = encode(tokenizer, texts, pairs if has_pairs else None, config.data.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logits = logits_of(model, config.end_task, encoded, pad_id, outputs_of(meta), batch_size,
                       make_accelerator(config.train.precision, config.device).autocast)
    prediction = task_types.get(meta.get("type", "classification")).prediction
    out = output or sys.stdout
    for row in logits:
        out.write(json.dumps(prediction(row, meta)) + "\n")
    return len(texts)


def _predict_answers(config, model, tokenizer, path: Path, output, batch_size: int) -> int:
    """An extractive QA run's answer to each row's `question` in its `context`."""
    from .tasks.span import predict_answers

    rows = []
    for line, row in read_rows(path):
        for key in ("question", "context"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise TartanError(f"field {key!r} must be a non-empty string", path, line)
        rows.append({"question": row["question"], "context": row["context"], "line": line})
    out = output or sys.stdout
    for answer in predict_answers(model, config.end_task, tokenizer, rows, config.data.max_length, batch_size,
                                  make_accelerator(config.train.precision, config.device).autocast, path=path):
        out.write(json.dumps(answer) + "\n")
    return len(rows)
