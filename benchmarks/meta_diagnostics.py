"""What META-TARTAN's weights followed in finished runs: per run, each task's cosine with the dev
gradient (mean, sd, range over the logged steps), the meta head's train and dev losses, and the
task weights at the first and last logged steps. Reads only `log.jsonl`, so it works on committed
results without model weights.

    python benchmarks/meta_diagnostics.py benchmarks/results/tartan/meta_tartan/seed*
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tartan.rundir import RunLog


def read_log(run_dir: Path) -> list[dict]:
    log = RunLog(Path(run_dir))
    if not log.path.is_file():
        raise SystemExit(f"{log.path}: no such file (is {run_dir} a run directory?)")
    return log.records()


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.3f} (sd {sd:.3f}, {min(values):+.3f} to {max(values):+.3f})"


def diagnose(run_dir: Path) -> list[str]:
    records = [r for r in read_log(run_dir) if "strategy" in r and "weights" in r]
    if not records:
        return [f"{run_dir}: no META records in log.jsonl"]
    tasks = list(records[0]["weights"])
    lines = [f"{run_dir}: {len(records)} logged steps, last at step {records[-1]['step']}"]
    for task in tasks:
        cosines = [r["strategy"]["cosines"][task] for r in records if task in r["strategy"].get("cosines", {})]
        lines.append(f"  {task}: cosine {spread(cosines)}; weight {records[0]['weights'][task]:.3f} "
                     f"-> {records[-1]['weights'][task]:.3f}")
    for split in ("train", "dev"):
        # the same-head ablation trains no meta head, so it logs only the dev loss
        losses = [r["strategy"]["meta_head_losses"][split] for r in records
                  if split in r["strategy"].get("meta_head_losses", {})]
        if losses:
            lines.append(f"  {split} loss of the head the dev gradient goes through: {spread(losses)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    for run_dir in parser.parse_args().run_dirs:
        print("\n".join(diagnose(run_dir)))


if __name__ == "__main__":
    main()
