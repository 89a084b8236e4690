"""How fast finished runs fit their end task: per run, the end task's mean logged train loss in each
epoch of the end task's training stage (the multi-task stage for MT/META, fine-tuning otherwise;
pre-training stages are left out) and the dev metric at each evaluation. Reads only `log.jsonl`
and `metrics.json`, so it works on committed results without model weights.

    python benchmarks/end_task_fit.py benchmarks/results/finetune/citation_intent/lr1e-4/seed* \
        benchmarks/results/tartan/mt_tartan/seed*
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from meta_diagnostics import read_log

END_TASK_STAGES = ("multitask", "finetune")  # the first of these a run has is its end-task stage


def fit(run_dir: Path) -> tuple[str, str, list[float], list[tuple[int, float]]]:
    """(end task, stage, mean train loss per epoch, [(step, dev metric x100)])."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    end_task, metric = metrics["end_task"], metrics["metric"]
    records = read_log(run_dir)
    stages = {r.get("stage") for r in records}
    stage = next((s for s in END_TASK_STAGES if s in stages), None)
    if stage is None:
        raise SystemExit(f"{run_dir}: no {' or '.join(END_TASK_STAGES)} stage in its log")
    losses: dict[int, list[float]] = {}
    devs = []
    for record in records:
        if record.get("stage") != stage:
            continue
        if end_task in (record.get("loss") or {}):
            # a record at step s closes epoch ceil(s / steps per epoch); `epoch` is that fraction
            losses.setdefault(max(0, math.ceil(record["epoch"]) - 1), []).append(record["loss"][end_task])
        if "dev" in record:
            devs.append((record["step"], 100 * record["dev"][metric]))
    return end_task, stage, [statistics.mean(losses[e]) for e in sorted(losses)], devs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    for run_dir in args.runs:
        end_task, stage, losses, devs = fit(run_dir)
        print(f"{run_dir} ({end_task}, stage {stage})")
        print("  train loss per epoch: " + " ".join(f"{v:.3f}" for v in losses))
        print("  dev (step: metric):   " + " ".join(f"{s}: {v:.1f}" for s, v in devs))


if __name__ == "__main__":
    main()
