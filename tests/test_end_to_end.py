"""`tartan train` as a user runs it: the console script, the embedded MiniLM, a slice of real
ACL-ARC from ../shared/data."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SHARED_DATA, recipe


@pytest.mark.skipif(not (SHARED_DATA / "citation_intent").is_dir(),
                    reason=f"real data not found at {SHARED_DATA} (a checkout with ../shared beside it has it)")
def test_quickstart_runs_on_a_slice_of_acl_arc(tmp_path):
    task = tmp_path / "data" / "citation_intent"
    task.mkdir(parents=True)
    for split, count in (("train", 64), ("dev", 32), ("test", 32)):
        lines = (SHARED_DATA / "citation_intent" / f"{split}.jsonl").read_text().splitlines()[:count]
        (task / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    tartan = shutil.which("tartan", path=str(Path(sys.executable).parent)) or "tartan"
    result = subprocess.run(
        [tartan, "train", str(recipe("quickstart")), f"data_dir={tmp_path / 'data'}",
         f"output_dir={tmp_path / 'run'}", "train.max_steps=6", "train.eval_every=3", "data.max_length=64",
         "train.progress=false"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "| test |" in result.stdout and "| dev |" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "minilm" and metrics["stages"]["finetune"]["steps"] == 6
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
