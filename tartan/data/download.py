"""`tartan download`: fetch task files of the "Don't Stop Pretraining" release into a data directory.

A file only ever reaches its final name complete and readable as a task split; anything else leaves
the previous file untouched. `tartan-manifest.json` records what arrived so that later edits are noticed."""
from __future__ import annotations

import http.client
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from ..errors import TartanError
from ..rundir import write_text_atomic
from .labelled import SPLITS, file_digest, read_split

DEFAULT_BASE_URL = "https://allennlp.s3-us-west-2.amazonaws.com/dont_stop_pretraining/data"
BASE_URL_ENV = "TARTAN_DOWNLOAD_URL"
MANIFEST_NAME = "tartan-manifest.json"
TIMEOUT = 60.0  # seconds without progress before giving up on a connection
CHUNK = 1 << 16

# Names become folder names: nothing that could climb out of data_dir or hide the folder.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def resolve_base_url(base_url: str | None = None) -> str:
    """The argument, else $TARTAN_DOWNLOAD_URL, else DEFAULT_BASE_URL (without a trailing slash)."""
    return (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def download_tasks(names: list[str], data_dir: Path, base_url: str | None = None,
                   splits: tuple[str, ...] = SPLITS, progress: bool = True) -> list[Path]:
    """Download `<base_url>/<name>/<split>.jsonl` to `data_dir/<name>/<split>.jsonl` for every name
    and split; returns the final paths. Stops at the first failure with a TartanError."""
    data_dir = Path(data_dir)
    base = resolve_base_url(base_url)
    for name in names:
        if not _SAFE_NAME.fullmatch(name) or ".." in name:
            raise TartanError(f"invalid task name {name!r} (letters, digits, '_', '-', '.' only)")
    for split in splits:
        if split not in SPLITS:
            raise TartanError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    # train first: dev/test labels are checked against it
    ordered = sorted(dict.fromkeys(splits), key=SPLITS.index)
    # A corrupt manifest should stop us before any download, not after the first file arrived.
    _read_manifest(data_dir)
    done: list[Path] = []
    for name in names:
        created = _make_dirs(data_dir / name)
        try:
            for split in ordered:
                url = f"{base}/{urllib.parse.quote(name)}/{split}.jsonl"
                done.append(_download_file(url, data_dir, name, split, progress))
        except BaseException:
            # An unknown name (404) should not leave an empty task folder behind.
            for folder in reversed(created):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
    return done


def check_manifest(data_dir: Path, path: Path, digest: str) -> str | None:
    """A one-line warning if the manifest recorded `path` with a sha256 other than `digest`, else None."""
    data_dir = Path(data_dir)
    try:
        key = Path(path).resolve().relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        return None  # not under data_dir: the manifest cannot know it
    try:
        files = _read_manifest(data_dir)
    except TartanError as error:
        return f"{error} (cannot check whether {path} changed)"
    recorded = files.get(key, {}).get("sha256") if isinstance(files.get(key), dict) else None
    if recorded is None or recorded == digest:
        return None
    return (f"{path}: changed since it was downloaded "
            f"(sha256 {recorded[:12]}… in {MANIFEST_NAME}, now {digest[:12]}…)")


def warn_if_changed(data_dir: Path, paths_and_digests) -> None:
    """Print a warning for each (path, digest) that differs from what was downloaded."""
    for path, digest in paths_and_digests:
        warning = check_manifest(Path(data_dir), path, digest)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders that did not exist before (outermost first)."""
    missing = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        missing.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _download_file(url: str, data_dir: Path, name: str, split: str, progress: bool) -> Path:
    folder = data_dir / name
    final = folder / f"{split}.jsonl"
    handle, part_name = tempfile.mkstemp(dir=folder, prefix=f".{split}.", suffix=".jsonl.part")
    part = Path(part_name)
    # read_split picks its reader by extension, so the finished download is checked under a name
    # ending in .jsonl; the leading dot keeps it from ever being taken for the split itself.
    checking = part.with_suffix("")
    try:
        with os.fdopen(handle, "wb") as out:
            size = _fetch(url, out, f"{name}/{split}.jsonl", progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, checking)
        _check_format(url, checking, folder, split)
        digest = file_digest(checking)
        os.replace(checking, final)
    except BaseException:
        for leftover in (part, checking):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        raise
    _record(data_dir, final, url, digest, size)
    return final


def _fetch(url: str, out, label: str, progress: bool) -> int:
    """Stream `url` into `out`; returns the byte count, raising TartanError unless the body is complete."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        hint = " (no such task or split in the release?)" if error.code == 404 else ""
        raise TartanError(f"HTTP {error.code} {error.reason}{hint}", url) from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (ConnectionResetError, ConnectionAbortedError)):
            raise TartanError(f"connection dropped before the response ({reason})", url) from None
        raise TartanError(f"cannot download ({reason})", url) from None
    except (http.client.HTTPException, OSError) as error:
        raise TartanError(f"cannot download ({type(error).__name__}: {error})", url) from None
    with response:
        status = getattr(response, "status", 200)
        if status is not None and status != 200:
            raise TartanError(f"HTTP {status} {getattr(response, 'reason', '')} (expected 200)".rstrip(), url)
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.strip().isdigit() else None
        received = 0
        with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=not progress, leave=False) as bar:
            try:
                while True:
                    # read1: whatever has arrived, so the count is exact when the connection breaks
                    block = response.read1(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            except http.client.IncompleteRead as error:
                # chunked transfer cut off: http.client notices the missing chunks itself
                received += len(error.partial)
                raise TartanError(f"connection dropped after {received} bytes (incomplete chunked body)",
                                  url) from None
            except (http.client.HTTPException, OSError) as error:
                of = f" of {expected}" if expected is not None else ""
                raise TartanError(f"connection dropped after {received}{of} bytes "
                                  f"({type(error).__name__}: {error})", url) from None
    # http.client returns a short body silently when the peer closes early; only the count tells.
    if expected is not None and received != expected:
        raise TartanError(f"truncated: got {received} of {expected} bytes", url)
    return received


def _check_format(url: str, path: Path, folder: Path, split: str) -> None:
    known = None
    train = folder / "train.jsonl"
    if split != "train" and train.is_file():
        try:
            known = set(read_split(train).labels)
        except TartanError as error:
            raise TartanError(f"cannot check labels of {split}: the train file is invalid ({error})", url) from None
    try:
        read_split(path, known)
    except TartanError as error:
        where = f"line {error.line}: " if error.line is not None else ""
        raise TartanError(f"not valid task format: {where}{error.message}", url) from None


def _manifest_path(data_dir: Path) -> Path:
    return Path(data_dir) / MANIFEST_NAME


def _read_manifest(data_dir: Path) -> dict:
    path = _manifest_path(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise TartanError(f"cannot read manifest ({error})", path) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as error:
        raise TartanError(f"manifest is not valid JSON ({error.msg}; delete it to start afresh)",
                          path, error.lineno) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise TartanError("manifest has no 'files' object (delete it to start afresh)", path)
    return files


def _record(data_dir: Path, final: Path, url: str, digest: str, size: int) -> None:
    files = _read_manifest(data_dir)
    files[final.relative_to(data_dir).as_posix()] = {
        "sha256": digest, "bytes": size, "url": url,
        "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomic(_manifest_path(data_dir), json.dumps({"files": dict(sorted(files.items()))}, indent=2) + "\n")
