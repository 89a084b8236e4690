"""The run directory contract (DESIGN.md): every file written atomically (temporary file, then
rename), so that a killed run never leaves half a file behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import TartanError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs that share a stage then may compute it twice
    fcntl = None

CONFIG = "config.yaml"
METRICS = "metrics.json"
LOG = "log.jsonl"
WEIGHTS = "task_weights.csv"
MODEL = "model"
HEADS = "heads"
CHECKPOINT = "checkpoint"


# in any section: they do not change what a run computes (trust_remote_code only permits loading a model)
DISPLAY_KEYS = ("progress", "log_every", "checkpoint_minutes", "trust_remote_code", "device", "prefetch")


def defining(config: dict, prefix: str = "") -> dict:
    """A resolved config as dotted keys, minus display settings: what decides a run's result."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(defining(value, f"{prefix}{key}."))
        elif key not in DISPLAY_KEYS:
            flat[f"{prefix}{key}"] = value
    return flat


def read_json(path: Path, kind: type, what: str):
    """The JSON value `path` holds, which must be a `kind` (`what` describes it); a malformed,
    non-UTF-8 or other-typed file is a one-line error naming it (and the line)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TartanError(f"malformed JSON ({error.msg})", path, error.lineno) from None
    except UnicodeDecodeError:
        raise TartanError("not UTF-8 text", path) from None
    if not isinstance(value, kind):
        raise TartanError(f"expected {what}", path)
    return value


def read_metrics(run_dir: Path) -> dict:
    """A finished run's metrics.json; missing, malformed or without the end task's figure (test or
    dev, under its "metric") is a one-line error naming the file."""
    metrics_path = Path(run_dir) / METRICS
    if not metrics_path.is_file():
        raise TartanError(f"no {METRICS} here: not a finished run", run_dir)
    metrics = read_json(metrics_path, dict, "a JSON object of metrics")
    for key in ("metric", "test"):
        if key not in metrics:
            raise TartanError(f"no {key!r} key: not a tartan metrics file", metrics_path)
    if not isinstance(metrics["metric"], str):
        raise TartanError(f"'metric' must be a metric's name, got {metrics['metric']!r}", metrics_path)
    for key, kind in (("seed", int), ("end_task", str), ("stages", dict)):
        if metrics.get(key) is not None and (not isinstance(metrics[key], kind) or isinstance(metrics[key], bool)):
            raise TartanError(f"{key!r} has a value of the wrong type: {metrics[key]!r}", metrics_path)
    for name, stage in (metrics.get("stages") or {}).items():
        if not isinstance(stage, dict) or not is_number(stage.get("train_seconds", 0.0)):
            raise TartanError(f"stage {name!r} must be an object with a number of train_seconds", metrics_path)
    for split in ("test", "dev"):  # either may be null (an end task without that split), not half-written
        if metrics.get(split) is not None and (not isinstance(metrics[split], dict)
                                               or not is_number(metrics[split].get(metrics["metric"]))):
            raise TartanError(f"{split} has no number for {metrics['metric']!r}", metrics_path)
    if metrics["test"] is None and metrics.get("dev") is None:
        raise TartanError("neither test nor dev figures", metrics_path)
    return metrics


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_config(run_dir: Path) -> dict:
    """A run's resolved config.yaml as a plain mapping; missing or malformed is a one-line error."""
    from .config import read_yaml  # config builds on this module's contract, not the reverse

    return read_yaml(Path(run_dir) / CONFIG, "run config") or {}


def check_writable_folder(path: Path, what: str = "output_dir") -> None:
    """That `path` is a folder tartan can write into, or can be made one: a one-line error before
    any work, not a traceback after it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TartanError(f"{what} is a file, not a folder", path)
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise TartanError(f"{what} cannot be made: {existing} is a file", path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TartanError(f"{what} cannot be written: no permission to write in {existing}", path)


def check_writable_file(path: Path, what: str = "output file") -> None:
    """That tartan can write the file `path` (its folder exists or can be made, it is not a folder)."""
    path = Path(path)
    if path.is_dir():
        raise TartanError(f"{what} is a folder", path)
    check_writable_folder(path.parent, f"the {what}'s folder")


def make_folder(path: Path, what: str = "output_dir") -> None:
    """mkdir -p, an OSError (disk full, read-only filesystem) as a one-line error."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TartanError(f"{what} cannot be made: {error.strerror or error}", path) from None


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file that replaces `path` whole; the file gets the permissions a
    plain open would give it (mkstemp's are the owner's only), and a failed write leaves nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):  # a full disk, a read-only filesystem: the machine's, not tartan's
            raise TartanError(f"cannot write: {error.strerror or error}", path) from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=1) + "\n")


@contextlib.contextmanager
def exclusive(lock_file: Path | None, enabled: bool = True):
    """Hold an exclusive lock on `lock_file` while the block runs; whoever else asks for it (another
    process, or another thread through its own open) waits. The OS drops the lock when its holder
    dies, so a killed run leaves no stale lock behind."""
    if not enabled or fcntl is None:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def umask_permissions(folder: Path) -> None:
    """The permissions a plain mkdir and open would have given `folder` and everything in it: a
    temporary folder (mkdtemp) is its owner's only, and so are some libraries' files (safetensors')."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(parent, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o666 & ~mask)


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Put a fully written folder in place of `final_dir`; at every moment one complete copy exists
    under `final_dir` or `final_dir.old`."""
    umask_permissions(tmp_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    if final_dir.exists():
        if old.exists():
            shutil.rmtree(old)  # final_dir is complete: the older copy is not needed
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)


def existing_dir(final_dir: Path) -> Path | None:
    """The complete copy of a folder written with replace_dir, if any."""
    old = final_dir.with_name(final_dir.name + ".old")
    return final_dir if final_dir.is_dir() else old if old.is_dir() else None


class RunLog:
    """log.jsonl, one JSON object a line, flushed as the run goes."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = run_dir / LOG
        self.enabled = enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise TartanError("not UTF-8 text", self.path) from None
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif number < len(lines):  # only the last line can be cut short, by a run killed writing it
                raise TartanError("expected one JSON object a line", self.path, number)
        return records

    def drop_after(self, stage: str, step: int) -> None:
        """On resume: forget what a killed run logged after its last checkpoint, so the log reads as
        the log of one uninterrupted run."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for record in self.records():
            if record.get("stage") == stage and ("reused" in record or record.get("step", 0) > step):
                continue
            kept.append(json.dumps(record))
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))
