"""Recipes on ACL-ARC with the embedded model, several seeds each, fine-tuned with the body learning
rate that benchmarks/finetune_quality.py chose on dev (so its fine-tuning baseline is the
comparison). Resumable (a finished run is read back, a killed one resumes); pre-training stages are
computed once and shared by the seeds; the summary table is rewritten after every run.

    nohup python benchmarks/method_quality.py --data-dir ../shared/data \\
        --recipes tapt dapt dapt_tapt --out benchmarks/results/continued_pretraining > cpt.log 2>&1 &
    nohup python benchmarks/method_quality.py --data-dir ../shared/data --order seed \\
        --recipes mt_tartan meta_tartan meta_tartan_same_head --out benchmarks/results/tartan > t.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tartan.config import load_config
from tartan.run import train

HERE = Path(__file__).resolve().parent


def fmt(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summary(results: dict[str, list[dict]], metric: str) -> str:
    lines = [f"| recipe | seeds | dev {metric} | test {metric} | test per seed | wall seconds per run (mean) "
             "| seconds per stage (mean) |", "|---|---|---|---|---|---|---|"]
    for recipe, runs in results.items():
        if not runs:
            continue
        dev = [100 * r["dev"][metric] for r in runs]
        test = [100 * r["test"][metric] for r in runs]
        stages = []
        for name in runs[0]["stages"]:
            seconds = statistics.mean(r["stages"][name]["train_seconds"] for r in runs)
            reused = all("reused" in r["stages"][name] for r in runs[1:]) and len(runs) > 1
            stages.append(f"{name} {seconds:.0f}" + (" (computed once)" if reused else ""))
        wall = statistics.mean(r["wall_seconds"] for r in runs)
        lines.append(f"| {recipe} | {len(runs)} | {fmt(dev)} | {fmt(test)} | {', '.join(f'{t:.2f}' for t in test)} "
                     f"| {wall:.0f} | {', '.join(stages)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    parser.add_argument("--recipes", nargs="+", default=["tapt", "dapt", "dapt_tapt"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--order", choices=("recipe", "seed"), default="recipe",
                        help="recipe: all seeds of a recipe, then the next; seed: every recipe at seed 0 first")
    parser.add_argument("--out", default=str(HERE / "results" / "continued_pretraining"))
    parser.add_argument("--lr-body", default=None, help="default: the one finetune_quality chose on dev")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    lr = args.lr_body or json.loads((HERE / "results" / "finetune" / "summary.json").read_text())["chosen_lr_body"]
    out = Path(args.out)
    grid = ([(r, s) for r in args.recipes for s in args.seeds] if args.order == "recipe"
            else [(r, s) for s in args.seeds for r in args.recipes])
    results: dict[str, list[dict]] = {recipe: [] for recipe in args.recipes}
    metric = None
    for recipe, seed in grid:
        overrides = [f"data_dir={args.data_dir}", f"seed={seed}", f"train.lr_body={lr}", "train.progress=false",
                     f"output_dir={out / recipe / f'seed{seed}'}", *args.overrides]
        metrics = train(load_config(HERE.parent / "recipes" / f"{recipe}.yaml", overrides))
        metric = metrics["metric"]
        stages = {name: round(stage["train_seconds"]) for name, stage in metrics["stages"].items()}
        print(json.dumps({"recipe": recipe, "seed": seed, "dev": metrics["dev"][metric],
                          "test": metrics["test"][metric], "stage_seconds": stages,
                          "reused": [n for n, s in metrics["stages"].items() if s.get("reused")]}), flush=True)
        results[recipe].append(metrics)
        (out / "summary.md").write_text(summary(results, metric))
    print(summary(results, metric))


if __name__ == "__main__":
    main()
