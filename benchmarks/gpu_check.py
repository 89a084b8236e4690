"""One command that checks tartan on a GPU: every method runs, a run resumes across devices, eval,
predict and export work, tartan's loop keeps up with a bare hand-written one, META's step costs
little more than MT's, no step synchronises with the host, and sweep jobs share the GPU.

    python benchmarks/gpu_check.py --data-dir DIR [--model M] [--device cuda] [--quick] [--output FILE]
        [--processes N]   (N GPUs: also how MT-TARTAN scales from 1 process to N)

No network: the model is the embedded MiniLM unless --model names a local folder. On a machine
without network, from the project root: `bash ../shared/gpu/pack.sh citation_intent chemprot sci_cite`
here, then `bash .gpu/run.sh python3 benchmarks/gpu_check.py` there (run.sh exports TARTAN_DATA).
Ends in under 8 minutes on one GPU. Each part's result goes into one JSON object, printed as the
last line (and written to --output); a part that fails says why in it and the others still run.
--device cpu --quick runs the same checks on a CPU, in miniature (what the CPU's tests exercise).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["finetune", "tapt", "dapt", "dapt_tapt", "mt_tartan", "meta_tartan", "meta_tartan_same_head", "muppet"]


def tartan(*args: str, env: dict | None = None, timeout: float = 300) -> tuple[int, str, float]:
    """(exit status, last lines of the output, seconds) of `python -m tartan ARGS`."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "tartan", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        output, code = f"timed out after {timeout} s: {error.output or ''}", 124
    return code, "\n".join(output.strip().splitlines()[-4:]), time.perf_counter() - started


def common(args, out: Path, name: str) -> list[str]:
    steps = 6 if args.quick else 40
    return [f"data_dir={args.data_dir}", f"model={args.model}", f"device={args.device}", f"output_dir={out / name}",
            f"train.max_steps={steps}", f"pretrain.max_steps={steps}", f"muppet.max_steps={steps}",
            f"train.eval_every={steps}", "muppet.eval_every=1000", "train.progress=false", "pretrain.progress=false",
            "muppet.progress=false", "data.max_length=128"]


def muppet_tasks(data_dir: str) -> str:
    present = [t for t in ("chemprot", "sci_cite", "citation_intent") if (Path(data_dir) / t).is_dir()]
    return f"muppet.tasks=[{','.join(present[:2])}]"


def check_methods(args, out: Path) -> dict:
    """A short run of every method; then eval, predict and export of the fine-tuned one."""
    result = {}
    for method in METHODS:
        extra = [muppet_tasks(args.data_dir)] if method == "muppet" else []
        code, tail, seconds = tartan("train", f"recipes/{method}.yaml", *common(args, out, method), *extra)
        entry = {"ok": code == 0, "seconds": round(seconds, 1)}
        if code == 0:
            metrics = json.loads((out / method / "metrics.json").read_text())
            entry.update(test_macro_f1=metrics["test"]["macro_f1"], tokens_per_second=round(metrics["tokens_per_second"]))
        else:
            entry["error"] = tail
        result[method] = entry
        print(f"{method}: {entry}", flush=True)
    run = out / "finetune"
    if result["finetune"]["ok"]:
        predict_in = out / "predict.txt"
        predict_in.write_text("we use the method of smith et al.\nour results differ from theirs\n")
        for name, command in (("eval", ["eval", str(run), "--device", args.device]),
                              ("predict", ["predict", str(run), str(predict_in), "--device", args.device]),
                              ("export", ["export", str(run), str(out / "exported"), "--device", args.device])):
            code, tail, seconds = tartan(*command)
            result[name] = {"ok": code == 0, "seconds": round(seconds, 1), **({} if code == 0 else {"error": tail})}
            print(f"{name}: {result[name]}", flush=True)
    return result


def check_resume_across_devices(args, out: Path) -> dict:
    """A fine-tuning run killed on one device after its first checkpoint and resumed on the other,
    both ways; it must finish, from the checkpoint."""
    if args.device == "cpu":
        return {"skipped": "--device cpu: there is no other device to cross to"}
    result = {}
    steps = 8 if args.quick else 60
    for first, then in ((args.device, "cpu"), ("cpu", args.device)):
        name = f"resume_{first}_to_{then}".replace(":", "")
        overrides = common(args, out, name) + [f"train.max_steps={steps}", f"train.eval_every={steps // 4}"]
        command = [sys.executable, "-m", "tartan", "train", "recipes/finetune.yaml", *overrides, f"device={first}"]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        state = out / name / "checkpoint" / "finetune" / "last" / "state.json"
        deadline = time.time() + 240
        while not state.is_file() and process.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        killed_at = json.loads(state.read_text())["loop"]["step"] if state.is_file() else None
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code, tail, seconds = tartan("train", "recipes/finetune.yaml", *overrides, f"device={then}")
        finished = (out / name / "metrics.json").is_file()
        result[f"{first} -> {then}"] = {"killed_at_step": killed_at, "finished": finished and code == 0,
                                         **({} if code == 0 else {"error": tail})}
        print(f"resume {first} -> {then}: {result[f'{first} -> {then}']}", flush=True)
    return result


def speed(args) -> dict:
    """tartan's fine-tuning loop against a bare loop over the same batches, at batch 16 and 64; the
    MT and META steps (benchmarks/speed.py)."""
    steps = "6" if args.quick else "40"
    result = {}
    for part, extra in (("finetune", ["--batch-sizes", "16,64", "--precisions", "bf16"]),
                        ("multitask", [])):
        done = subprocess.run([sys.executable, "benchmarks/speed.py", "--only", part, "--device", args.device,
                               "--data-dir", args.data_dir, "--steps", steps, *(["--quick"] if args.quick else []),
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
        lines = done.stdout.strip().splitlines()
        try:
            result[part] = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            result[part] = {"error": "\n".join((done.stdout + done.stderr).strip().splitlines()[-4:])}
        print(f"speed {part}: {result[part]}", flush=True)
    return result


def syncs(args) -> dict:
    """Syncs per step of every weighting strategy (benchmarks/host_syncs.py: counted, and on a GPU
    checked under torch.cuda.set_sync_debug_mode("error"))."""
    done = subprocess.run([sys.executable, "benchmarks/host_syncs.py", "--device", args.device, "--data-dir",
                           args.data_dir, "--steps", "4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": "\n".join((done.stdout + done.stderr).strip().splitlines()[-4:])}


def sweep_throughput(args, out: Path) -> dict:
    """The same fine-tuning runs as a sweep with 1 job and with 4 sharing the device: tokens trained
    per second of the sweep's wall clock."""
    import yaml

    steps = 8 if args.quick else 150
    result = {}
    for jobs in (1, 4):
        root = out / f"sweep_jobs{jobs}"
        spec = {"root": str(root), "recipes": ["finetune"], "end_tasks": ["citation_intent"], "seeds": [0, 1, 2, 3],
                "overrides": {"model": args.model, "data_dir": args.data_dir, "device": args.device,
                              "train.max_steps": steps, "train.eval_every": steps, "train.progress": False,
                              "data.max_length": 128}}
        path = out / f"sweep_jobs{jobs}.yaml"
        path.write_text(yaml.safe_dump(spec))
        started = time.perf_counter()
        code, tail, _ = tartan("sweep", str(path), "--jobs", str(jobs), timeout=400)
        seconds = time.perf_counter() - started
        runs = [json.loads(p.read_text()) for p in root.glob("*/*/seed*/metrics.json")]
        tokens = sum(r["tokens_per_second"] * r["train_seconds"] for r in runs)
        result[f"jobs{jobs}"] = {"runs": len(runs), "seconds": round(seconds, 1),
                                 "tokens_per_second": round(tokens / seconds),
                                 **({} if code == 0 else {"error": tail})}
        print(f"sweep --jobs {jobs}: {result[f'jobs{jobs}']}", flush=True)
    if result["jobs1"]["tokens_per_second"]:
        result["jobs4_vs_jobs1"] = round(result["jobs4"]["tokens_per_second"] / result["jobs1"]["tokens_per_second"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TARTAN_DATA") or str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a few steps of each part (a CPU's smoke test)")
    parser.add_argument("--only", action="append", default=[],
                        choices=("methods", "resume", "speed", "syncs", "sweep", "scaling"))
    parser.add_argument("--processes", type=int, default=1,
                        help="N > 1: also MT-TARTAN on 1 against N GPUs, 32 rows per process (processes_scaling.py)")
    parser.add_argument("--output", help="also write the JSON object here")
    args = parser.parse_args()
    import torch

    result = {"device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "model": args.model}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tartan-gpu-check-") as tmp:
        out = Path(tmp)
        parts = {"methods": lambda: check_methods(args, out), "resume": lambda: check_resume_across_devices(args, out),
                 "speed": lambda: speed(args), "syncs": lambda: syncs(args), "sweep": lambda: sweep_throughput(args, out)}
        if args.processes > 1:
            from processes_scaling import scaling

            parts["scaling"] = lambda: scaling(args.data_dir, args.device, (1, args.processes), rows=32,
                                               steps=6 if args.quick else 40, model=args.model)
        for name, part in parts.items():
            if args.only and name not in args.only:
                continue
            try:
                result[name] = part()
            except Exception as error:  # the other parts still run
                result[name] = {"error": f"{type(error).__name__}: {error}"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    line = json.dumps(result)
    if args.output:
        Path(args.output).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
