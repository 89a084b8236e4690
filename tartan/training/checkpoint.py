"""Resume checkpoints: model, optimizer, scheduler, RNG and loop state, written as one folder that
replaces the previous one atomically. Weights are safetensors; optimizer state loads with
weights_only=True (no pickle of arbitrary objects)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from ..errors import TartanError, first_line
from ..rundir import existing_dir, replace_dir


BEST = "best.safetensors"


def rng_state() -> dict:
    """This process's random generators: the CPU's, and a GPU's where there is one (dropout on a
    GPU draws from the device's generators)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: dict, best_is_current: bool,
                    rng_states: list[dict] | None = None) -> None:
    """Write the resume state and the best weights so far (the current ones, or those of the
    previous checkpoint, if any) as one folder that replaces the previous one atomically.
    `rng_states`: every process's generators, by rank (default: this process's only)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    previous = existing_dir(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        if best_is_current:
            os.link(tmp / "model.safetensors", tmp / BEST)
        elif previous is not None and (previous / BEST).is_file():
            os.link(previous / BEST, tmp / BEST)  # a hard link: no copy of the weights
        # else a timed checkpoint before the first evaluation: no best weights yet
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"ranks": rng_states or [rng_state()]}, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        replace_dir(tmp, folder)
    except BaseException:  # a full disk: the previous checkpoint stands, and no half-written one beside it
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _device_of(model) -> torch.device:
    return next(iter(model.parameters())).device


def best_weights(folder: Path) -> Path:
    found = existing_dir(folder)
    if found is None or not (found / BEST).is_file():
        raise FileNotFoundError(f"no best weights in {folder}")
    return found / BEST


def _complete(folder: Path) -> Path | None:
    found = existing_dir(folder)
    return found if found is not None and (found / "state.json").is_file() else None


def checkpoint_state(folder: Path) -> dict | None:
    """The state save_checkpoint wrote (loop and strategy), or None when there is no checkpoint."""
    found = _complete(folder)
    return None if found is None else _state(found)


def _state(found: Path) -> dict:
    path = found / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TartanError(f"malformed checkpoint state ({first_line(error)}): delete {found} to restart "
                          "the stage", path) from None
    if not isinstance(state, dict) or not isinstance(state.get("loop"), dict) or not isinstance(
            state["loop"].get("step"), int):
        raise TartanError(f"not a checkpoint state (no loop step): delete {found} to restart the stage", path)
    return state


def load_checkpoint(folder: Path, model, optimizer, scheduler, rank: int = 0) -> dict | None:
    """Restore what save_checkpoint wrote, the generators of process `rank`; the loop state, or
    None when there is no checkpoint."""
    found = _complete(folder)
    if found is None:
        return None
    state = _state(found)
    # read onto the CPU whatever device wrote them: the optimizer moves its state to its parameters'
    # device, so that a run begun on a GPU resumes on a CPU and back
    try:
        load_model(model, str(found / "model.safetensors"), device=str(_device_of(model)))
        optimizer.load_state_dict(torch.load(found / "optimizer.pt", map_location="cpu", weights_only=True))
        scheduler.load_state_dict(torch.load(found / "scheduler.pt", map_location="cpu", weights_only=True))
        rng = torch.load(found / "rng.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: the checkpoint, not tartan, is broken
        raise TartanError(f"cannot read the checkpoint ({first_line(error)}): delete it to restart the stage",
                          found) from None
    if "ranks" in rng:  # else a checkpoint from before every process's generators were saved
        rng = rng["ranks"][rank] if rank < len(rng["ranks"]) else rng["ranks"][0]
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state
