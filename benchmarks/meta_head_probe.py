"""Does the dev gradient through META-TARTAN's meta head say anything about the end task? On a finished
run's body, for a number of (end-task train batch, dev batch) draws: the cosine between the end
task's train gradient (through its own head, as in training) and the dev gradient through

- `meta head, 1 batch`: a fresh head trained 10 steps on the train batch's features (what
  META-TARTAN does every step, DESIGN.md);
- `meta head, another batch`: the same, trained on another train batch than the one whose
  gradient it is compared with;
- `meta head, train set`: a fresh head fit on the features of the whole train set (a well-fit probe
  of the same frozen body);
- `own head`: the end task's trained head (the same-head ablation),

with each head's loss on the dev batch, and the cosine of each dev gradient with the own head's.
Dev only: nothing here reads the test split. Modules in training mode, as in a training step.

    python benchmarks/meta_head_probe.py benchmarks/results/paper_table/citation_intent/meta_tartan/seed0
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from tartan.data.batching import sorted_batches
from tartan.inference import load_finished
from tartan.run import build_task
from tartan.weighting.meta import _dot, _norm, _zeros_for_none


def fit_head(task, body, features: torch.Tensor, batch: dict, steps: int, batch_size: int | None,
             lr: float = 1e-3, weight_decay: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """A fresh end-task head trained on frozen features (all rows per step, or minibatches)."""
    torch.manual_seed(seed)
    head = task.make_head(body)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    rows = features.shape[0]
    for step in range(steps):
        pick = slice(None) if batch_size is None else torch.randint(rows, (batch_size,))
        loss = task.loss(head(features[pick]), {"labels": batch["labels"][pick]})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head


def cls_features(model, task, split: str, batch_size: int = 64) -> tuple[torch.Tensor, dict]:
    """The body's first-token output for every example of `split` (all the head reads)."""
    features = torch.zeros(task.num_examples(split), 1, model.body.config.hidden_size)
    with torch.no_grad():
        for indices in sorted_batches(task._lengths[split], batch_size):
            features[indices] = model.encode(task.collate(split, indices))[:, :1].float()
    return features, {"labels": torch.from_numpy(task.labels[split])}


def probe(run_dir: Path, draws: int, data_dir: str | None) -> list[str]:
    config, model, tokenizer, _ = load_finished(run_dir)
    if data_dir:
        config.data_dir = data_dir
    task = build_task(config.end_task, "classification", {}, config, tokenizer)
    own_head = model.heads[config.end_task]
    body = [p for p in model.body.parameters() if p.requires_grad]
    model.eval()
    train_features, train_labels = cls_features(model, task, "train")
    train_set_head = fit_head(task, model.body, train_features, train_labels, steps=500, batch_size=64)
    model.train()

    def gradient(head, batch) -> tuple[list[torch.Tensor], float]:
        loss = task.loss(head(model.encode(batch), batch), batch)
        return _zeros_for_none(torch.autograd.grad(loss, body, allow_unused=True), body), float(loss.detach())

    train_batches = task.shuffled_batches("train", 0, 16)
    dev_batches = task.shuffled_batches("dev", 0, 16)
    names = ["meta head, 1 batch", "meta head, another batch", "meta head, train set", "own head"]
    cosines = {n: [] for n in names}
    with_own = {n: [] for n in names}
    dev_losses = {n: [] for n in names}
    for draw in range(draws):
        torch.manual_seed(draw)
        train = task.collate("train", train_batches[draw % len(train_batches)])
        dev = task.collate("dev", dev_batches[draw % len(dev_batches)])
        end_gradient, _ = gradient(own_head, train)
        other = task.collate("train", train_batches[(draw + 1) % len(train_batches)])
        with torch.no_grad():
            features, other_features = model.encode(train).float(), model.encode(other).float()
        heads = {"meta head, 1 batch": fit_head(task, model.body, features, train, steps=10, batch_size=None, seed=draw),
                 "meta head, another batch": fit_head(task, model.body, other_features, other, steps=10,
                                                      batch_size=None, seed=draw),
                 "meta head, train set": train_set_head, "own head": own_head}
        dev_gradients = {}
        for name, head in heads.items():
            dev_gradients[name], loss = gradient(head, dev)
            dev_losses[name].append(loss)
        own = dev_gradients["own head"]
        for name in names:
            g = dev_gradients[name]
            cosines[name].append(float(_dot(end_gradient, g) / (_norm(end_gradient) * _norm(g))))
            with_own[name].append(float(_dot(own, g) / (_norm(own) * _norm(g))))
    lines = [f"{run_dir}: {draws} draws of a train and a dev batch of 16 ({config.end_task}, best step of the run)",
             "| dev gradient through | cos with end-task train gradient | cos with own head's dev gradient | dev batch loss |",
             "|---|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {_spread(cosines[name])} | {_spread(with_own[name])} | {_spread(dev_losses[name])} |")
    return lines


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):+.3f} (sd {statistics.stdev(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--data-dir", default=None, help="where the end task's folder is (default: the run's)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run_dir in args.run_dirs:
        print("\n".join(probe(run_dir, args.draws, args.data_dir)), flush=True)


if __name__ == "__main__":
    main()
