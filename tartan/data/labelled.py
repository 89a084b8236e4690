"""Labelled task folders: `{train,dev,test}.{jsonl,csv,tsv}` rows with `text`, `label` and an optional
`text_pair`. The label vocabulary comes from train; a dev/test label train never had is an error."""
from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import TartanError
from .readers import read_rows

SPLITS = ("train", "dev", "test")
LABELLED_EXTENSIONS = ("jsonl", "csv", "tsv")


@dataclass
class LabelledSplit:
    path: Path
    digest: str  # sha256 of the file's bytes: keys the token cache, notices changed files
    texts: list[str]
    text_pairs: list[str] | None
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class LabelledTask:
    name: str
    folder: Path
    label_names: list[str]
    splits: dict[str, LabelledSplit]

    def label_ids(self, split: str) -> list[int]:
        index = {name: i for i, name in enumerate(self.label_names)}
        return [index[label] for label in self.splits[split].labels]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}.{ext}" for ext in LABELLED_EXTENSIONS if (folder / f"{split}.{ext}").is_file()]
    if len(found) > 1:
        raise TartanError(f"several files for split {split!r}: {', '.join(p.name for p in found)}", folder)
    if not found:
        # a `test.json` or `train.csv.gz` would otherwise leave its split silently missing
        unread = sorted(p.name for p in folder.glob(f"{split}.*") if p.is_file())
        if unread:
            raise TartanError(f"{', '.join(unread)}: not a file type a labelled split is read from (known: "
                              f"{', '.join('.' + e for e in LABELLED_EXTENSIONS)})", folder)
    return found[0] if found else None


def read_split(path: Path, known_labels: set[str] | None = None, scores: bool = False) -> LabelledSplit:
    """The rows of a split file, checked. `scores`: labels are numbers (a regression task's), not names."""
    texts: list[str] = []
    pairs: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    empty: list[int] = []
    for line, row in read_rows(path):
        text = row.get("text")
        if "text" not in row:
            raise TartanError("missing field 'text'", path, line)
        if not isinstance(text, str):
            raise TartanError(f"field 'text' must be a string, got {type(text).__name__}", path, line)
        if "label" not in row or row["label"] is None or row["label"] == "":
            raise TartanError("missing field 'label'", path, line)
        label = row["label"]
        if scores:
            label = _score(label)
            if label is None:
                raise TartanError(f"field 'label' must be a number (a score), got {row['label']!r}", path, line)
        elif isinstance(label, bool) or not isinstance(label, (str, int)):
            raise TartanError(f"field 'label' must be a string or an integer, got {type(label).__name__}", path, line)
        else:
            label = str(label)
        if known_labels is not None and label not in known_labels:
            raise TartanError(f"label {label!r} never occurs in train (train labels: {', '.join(sorted(known_labels))})",
                              path, line)
        pair = row.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise TartanError(f"field 'text_pair' must be a string, got {type(pair).__name__}", path, line)
        if not text.strip() or (pair is not None and not pair.strip()):
            empty.append(line)  # checked whole first: a malformed row is still an error
            continue
        texts.append(text)
        pairs.append(pair)
        labels.append(label)
        lines.append(line)
    if empty and not texts:
        raise TartanError("every row has an empty text", path)
    if empty:
        # a released data set has one (hyperpartisan_news dev): refusing it would refuse the data,
        # scoring it would score a guess from nothing; skipped, and said
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        print(f"warning: {path}: skipped {len(empty)} row(s) with an empty text or text_pair (line {shown})",
              file=sys.stderr)
    has_pairs = [p is not None for p in pairs]
    if any(has_pairs) and not all(has_pairs):
        raise TartanError("missing field 'text_pair' (other rows of this file have one)",
                          path, lines[has_pairs.index(False)])
    return LabelledSplit(path=path, digest=file_digest(path), texts=texts,
                         text_pairs=pairs if any(has_pairs) else None, labels=labels)


def _score(value) -> float | None:
    """A finite number, from a JSON number or its text (a .csv cell); None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_task_name(name: str) -> None:
    """A task is a folder of data_dir, named by its folder name: a path would put the run's files
    (and read its data) somewhere else than the user thinks."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
        raise TartanError(f"task {name!r} is not a folder name: name a task by its folder inside data_dir "
                          "(data_dir=/path/to/data end_task=citation_intent)")


def load_labelled_task(data_dir: str | Path, name: str, splits: tuple[str, ...] = SPLITS,
                       scores: bool = False) -> LabelledTask:
    """Read and check every split of task folder `data_dir/name`; train and dev are required.
    `scores`: the labels are numbers (a regression task), which need no vocabulary."""
    data_dir = Path(data_dir)
    check_task_name(name)
    if not data_dir.is_dir():
        raise TartanError("data directory not found (set data_dir=... or $TARTAN_DATA)", data_dir)
    folder = data_dir / name
    if not folder.is_dir():
        tasks = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        raise TartanError(f"task folder not found (folders here: {', '.join(tasks) or 'none'})", folder)
    train_path = split_file(folder, "train")
    if train_path is None:
        raise TartanError(f"no train file (expected train.{{{','.join(LABELLED_EXTENSIONS)}}})", folder)
    loaded = {"train": read_split(train_path, scores=scores)}
    label_names = [] if scores else sorted(set(loaded["train"].labels))
    distinct = sorted(set(loaded["train"].labels), key=str)
    if len(distinct) < 2:
        raise TartanError(f"every row of train has the label {distinct[0]!r}: a task needs at least two "
                          "different labels in train", train_path) if distinct else TartanError("train has no rows",
                                                                                          train_path)
    for split in splits:
        if split == "train":
            continue
        path = split_file(folder, split)
        if path is None:
            if split == "dev":
                raise TartanError("no dev file (early stopping needs dev.jsonl, dev.csv or dev.tsv)", folder)
            continue
        loaded[split] = read_split(path, None if scores else set(label_names), scores=scores)
        pairs, train_pairs = loaded[split].text_pairs is not None, loaded["train"].text_pairs is not None
        if pairs != train_pairs:  # a model trained on pairs would be scored on texts alone, or the reverse
            raise TartanError(f"{'has' if pairs else 'has no'} field 'text_pair', which {train_path.name} "
                              f"{'has not' if pairs else 'has'}: every split of a task needs the same fields", path)
    from .download import warn_if_changed  # download reads splits with this module: import late

    warn_if_changed(data_dir, [(s.path, s.digest) for s in loaded.values()])
    return LabelledTask(name=name, folder=folder, label_names=label_names, splits=loaded)
