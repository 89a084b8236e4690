"""Continued pre-training baselines on ACL-ARC with the embedded model: tapt, dapt (1x domain text)
and dapt_tapt, 3 seeds each, fine-tuned with the body learning rate that benchmarks/finetune_quality.py
chose on dev (so the fine-tuning baseline there is the comparison). Resumable; the masked-LM stages
are computed once and shared by the seeds.

    nohup python benchmarks/continued_pretraining.py --data-dir ../shared/data > cpt.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tartan.config import load_config
from tartan.run import train

HERE = Path(__file__).resolve().parent
METHODS = ("tapt", "dapt", "dapt_tapt")
SEEDS = (0, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(HERE.parents[1] / "shared" / "data"))
    parser.add_argument("--out", default=str(HERE / "results" / "continued_pretraining"))
    parser.add_argument("--lr-body", default=None, help="default: the one finetune_quality chose on dev")
    args = parser.parse_args()
    lr = args.lr_body or json.loads((HERE / "results" / "finetune" / "summary.json").read_text())["chosen_lr_body"]
    out = Path(args.out)
    rows = []
    for method in METHODS:
        results = []
        for seed in SEEDS:
            overrides = [f"data_dir={args.data_dir}", f"seed={seed}", f"train.lr_body={lr}", "train.progress=false",
                         f"output_dir={out / method / f'seed{seed}'}"]
            metrics = train(load_config(HERE.parent / "recipes" / f"{method}.yaml", overrides))
            stages = {name: round(stage["train_seconds"]) for name, stage in metrics["stages"].items()}
            print(json.dumps({"method": method, "seed": seed, "dev": metrics["dev"]["macro_f1"],
                              "test": metrics["test"]["macro_f1"], "stage_seconds": stages,
                              "reused": [n for n, s in metrics["stages"].items() if s.get("reused")]}), flush=True)
            results.append(metrics)
        rows.append((method, results))
    lines = ["| method | seeds | dev macro-F1 | test macro-F1 | seconds per stage (mean) |", "|---|---|---|---|---|"]
    for method, results in rows:
        dev = [100 * r["dev"]["macro_f1"] for r in results]
        test = [100 * r["test"]["macro_f1"] for r in results]
        stage_names = list(results[0]["stages"])
        seconds = ", ".join(f"{n} {statistics.mean(r['stages'][n]['train_seconds'] for r in results):.0f}"
                            for n in stage_names)
        lines.append(f"| {method} | {len(results)} | {statistics.mean(dev):.2f} ± {statistics.stdev(dev):.2f} | "
                     f"{statistics.mean(test):.2f} ± {statistics.stdev(test):.2f} | {seconds} |")
    report = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
