"""How tartan scales with processes: MT-TARTAN (the end task and TAPT) at a fixed number of rows per
process, 1 process against N: each process's training throughput (tokens per second of its own rows,
training steps only, as the run's metrics.json reports it).

    python benchmarks/processes_scaling.py [--data-dir DIR] [--device cpu|cuda] [--processes 1,2]
        [--rows 32] [--steps 15] [--recipe mt_tartan] [--output FILE]

On a CPU each process gets one thread (OMP_NUM_THREADS=1), so that N processes do not fight over
the cores one process would use. On GPUs each process takes one (torchrun's local rank). The issue's
target: steps/s per process of N processes at least 0.9 of one process's (the same ratio here). The last line printed is
one JSON object; `gpu_check.py --processes N` runs the same on a GPU machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(processes: int, overrides: list[str], recipe: str, device: str) -> None:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if device == "cpu" else {})}
    done = subprocess.run([*launcher, "-m", "tartan", "train", str(ROOT / "recipes" / f"{recipe}.yaml"), *overrides],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])


def scaling(data_dir: str, device: str = "cpu", counts: tuple[int, ...] = (1, 2), rows: int = 32, steps: int = 15,
            recipe: str = "mt_tartan", model: str = "minilm") -> dict:
    """{processes: figures}, and each N's steps/s per process against one process's."""
    result = {}
    with tempfile.TemporaryDirectory(prefix="tartan-scaling-") as tmp:
        for processes in counts:
            out = Path(tmp) / f"p{processes}"
            # the global batch grows with the processes: each holds `rows` rows of every task
            run(processes, [f"data_dir={data_dir}", f"model={model}", f"device={device}", f"output_dir={out}",
                            f"train.max_steps={steps}", "train.eval_every=100000", "multitask.auxiliary=tapt",
                            f"train.batch_size={rows * processes}",
                            f"multitask.auxiliary_batch_size={rows * processes}", "train.progress=false"],
                recipe, device)
            metrics = json.loads((out / "metrics.json").read_text())
            stage = metrics["stages"]["multitask"]
            # training steps only (no evaluation): with the same rows per process, a process's tokens
            # per step are alike at any N, so this ratio is that of steps per second
            figures = {"tokens_per_second_per_process": round(stage["tokens_per_second"])}
            if result:
                figures["vs_one_process"] = round(figures["tokens_per_second_per_process"]
                                                  / result[str(counts[0])]["tokens_per_second_per_process"], 3)
            result[str(processes)] = figures
            print(f"{processes} processes: {figures}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TARTAN_DATA") or str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--rows", type=int, default=32, help="rows of each task per process")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--recipe", default="mt_tartan")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--output")
    args = parser.parse_args()
    result = {"device": args.device, "rows_per_process": args.rows, "steps": args.steps, "recipe": args.recipe,
              "processes": scaling(args.data_dir, args.device, tuple(int(n) for n in args.processes.split(",")),
                                   args.rows, args.steps, args.recipe, args.model)}
    line = json.dumps(result)
    if args.output:
        Path(args.output).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
