"""tartan.data.download against a real local HTTP server, including servers that misbehave."""
from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tartan.data import download
from tartan.data.download import check_manifest, download_tasks, resolve_base_url
from tartan.data.labelled import file_digest
from tartan.errors import TartanError


def jsonl(labels: list[str], tag: str = "") -> bytes:
    return "".join(json.dumps({"text": f"sentence {i}{tag}", "label": label}) + "\n"
                   for i, label in enumerate(labels)).encode()


TRAIN = jsonl(["a", "b", "a", "b", "a"])
DEV = jsonl(["b", "a", "a", "b", "b"])
TEST = jsonl(["a", "a", "b", "b", "a"])
OLD_TRAIN = jsonl(["a", "b", "a", "b", "a"], tag=" (old)")


class Handler(BaseHTTPRequestHandler):
    # route -> (behaviour, body); set per test through the `server` fixture
    def do_GET(self):
        behaviour, body = self.server.routes.get(self.path, ("missing", b""))
        if behaviour == "missing":
            self.send_error(404)
            return
        if behaviour == "chunked-cut":
            self.protocol_version = "HTTP/1.1"  # chunked transfer needs 1.1
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if behaviour == "ok":
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif behaviour == "truncated":
            # announce more than is sent, then close cleanly (FIN): a short body
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        elif behaviour == "drop":
            # half the body, then a reset (SO_LINGER 0 makes close send RST instead of FIN)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.server.body_read.wait(timeout=5)  # the client has read some of the body: reset it mid-body
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif behaviour == "chunked-cut":
            # no Content-Length to compare with: one chunk, then a clean close without the final chunk
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
            self.close_connection = True

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the "drop" route closes its socket under the server's feet on purpose


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT", 5.0)
    monkeypatch.delenv("TARTAN_DOWNLOAD_URL", raising=False)
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.routes = {}
    httpd.body_read = threading.Event()  # set once the client has read a block of a response's body
    opened = download.urllib.request.urlopen

    def urlopen(*args, **kwargs):
        response = opened(*args, **kwargs)
        read1 = response.read1

        def read1_and_tell(*read_args):
            block = read1(*read_args)
            if block:
                httpd.body_read.set()
            return block

        response.read1 = read1_and_tell
        return response

    monkeypatch.setattr(download.urllib.request, "urlopen", urlopen)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/data"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve(server, name: str, **splits: tuple[str, bytes]) -> None:
    for split, route in splits.items():
        server.routes[f"/data/{name}/{split}.jsonl"] = route


def dotfiles(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob(".*")]


def test_happy_path_writes_files_and_manifest(server, tmp_path):
    serve(server, "citation_intent", train=("ok", TRAIN), dev=("ok", DEV), test=("ok", TEST))
    paths = download_tasks(["citation_intent"], tmp_path, base_url=server.base_url, progress=True)
    folder = tmp_path / "citation_intent"
    assert paths == [folder / "train.jsonl", folder / "dev.jsonl", folder / "test.jsonl"]
    for path, body in zip(paths, (TRAIN, DEV, TEST)):
        assert path.read_bytes() == body
    manifest = json.loads((tmp_path / "tartan-manifest.json").read_text())
    for split, body in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        entry = manifest["files"][f"citation_intent/{split}.jsonl"]
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        assert entry["bytes"] == len(body)
        assert entry["url"] == f"{server.base_url}/citation_intent/{split}.jsonl"
        assert entry["downloaded"]
    assert dotfiles(tmp_path) == []
    assert sorted(p.name for p in folder.iterdir()) == ["dev.jsonl", "test.jsonl", "train.jsonl"]


def test_base_url_from_environment(server, tmp_path, monkeypatch):
    serve(server, "ag", train=("ok", TRAIN))
    monkeypatch.setenv("TARTAN_DOWNLOAD_URL", server.base_url + "/")
    assert resolve_base_url() == server.base_url
    assert resolve_base_url("http://elsewhere/x") == "http://elsewhere/x"
    download_tasks(["ag"], tmp_path, splits=("train",), progress=False)
    assert (tmp_path / "ag" / "train.jsonl").read_bytes() == TRAIN
    monkeypatch.delenv("TARTAN_DOWNLOAD_URL")
    assert resolve_base_url() == download.DEFAULT_BASE_URL


@pytest.mark.parametrize("behaviour, pattern", [("truncated", r"truncated: got \d+ of \d+ bytes"),
                                                ("drop", r"connection dropped after \d+ of \d+ bytes"),
                                                ("chunked-cut", r"connection dropped.*incomplete chunked")])
@pytest.mark.parametrize("had_old_version", [False, True])
def test_incomplete_body_leaves_previous_file(server, tmp_path, behaviour, pattern, had_old_version):
    serve(server, "chemprot", train=(behaviour, TRAIN * 20))
    final = tmp_path / "chemprot" / "train.jsonl"
    if had_old_version:
        final.parent.mkdir()
        final.write_bytes(OLD_TRAIN)
    with pytest.raises(TartanError, match=pattern) as caught:
        download_tasks(["chemprot"], tmp_path, base_url=server.base_url, splits=("train",), progress=False)
    assert f"{server.base_url}/chemprot/train.jsonl" in str(caught.value)
    assert "\n" not in str(caught.value)
    if had_old_version:
        assert final.read_bytes() == OLD_TRAIN
        assert [p.name for p in final.parent.iterdir()] == ["train.jsonl"]
    else:
        assert not final.exists()
    assert dotfiles(tmp_path) == []
    assert not (tmp_path / "tartan-manifest.json").exists()


def test_404_names_the_url_and_writes_nothing(server, tmp_path):
    with pytest.raises(TartanError, match="HTTP 404") as caught:
        download_tasks(["no_such_task"], tmp_path, base_url=server.base_url, progress=False)
    assert f"{server.base_url}/no_such_task/train.jsonl" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_invalid_format_is_rejected_with_its_line(server, tmp_path):
    lines = TRAIN.splitlines(keepends=True)
    broken = b"".join(lines[:2] + [b'{"text": "oops", "label": \n'] + lines[3:])
    serve(server, "sciie", train=("ok", broken))
    final = tmp_path / "sciie" / "train.jsonl"
    final.parent.mkdir()
    final.write_bytes(OLD_TRAIN)
    with pytest.raises(TartanError, match=r"not valid task format: line 3: malformed JSON") as caught:
        download_tasks(["sciie"], tmp_path, base_url=server.base_url, progress=False)
    assert str(caught.value).startswith(f"{server.base_url}/sciie/train.jsonl: ")
    assert final.read_bytes() == OLD_TRAIN
    assert dotfiles(tmp_path) == []


def test_dev_labels_are_checked_against_train(server, tmp_path):
    serve(server, "rct-20k", train=("ok", TRAIN), dev=("ok", jsonl(["a", "zebra"])))
    with pytest.raises(TartanError, match=r"line 2: label 'zebra' never occurs in train"):
        download_tasks(["rct-20k"], tmp_path, base_url=server.base_url, progress=False)
    # train arrived before dev failed; it stays, and dev was never written
    assert (tmp_path / "rct-20k" / "train.jsonl").read_bytes() == TRAIN
    assert not (tmp_path / "rct-20k" / "dev.jsonl").exists()
    assert dotfiles(tmp_path) == []


def test_unsafe_names_are_refused(tmp_path):
    for name in ("../evil", "a/b", ".hidden", ""):
        with pytest.raises(TartanError, match="invalid task name"):
            download_tasks([name], tmp_path, base_url="http://127.0.0.1:9", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_check_manifest_warns_after_modification(server, tmp_path):
    serve(server, "imdb", train=("ok", TRAIN))
    [path] = download_tasks(["imdb"], tmp_path, base_url=server.base_url, splits=("train",), progress=False)
    assert check_manifest(tmp_path, path, file_digest(path)) is None
    assert check_manifest(tmp_path, tmp_path / "imdb" / "dev.jsonl", "0" * 64) is None  # not listed
    path.write_bytes(TRAIN + jsonl(["a"], tag=" extra"))
    warning = check_manifest(tmp_path, path, file_digest(path))
    assert warning is not None and "\n" not in warning
    assert warning.startswith(f"{path}: changed since it was downloaded (sha256 ")
    assert "tartan-manifest.json" in warning
    assert hashlib.sha256(TRAIN).hexdigest()[:12] in warning
    assert file_digest(path)[:12] in warning


def test_cli_download_then_a_run_notices_a_changed_file(server, tmp_path, capsys):
    from tartan.cli import main
    from tartan.data.labelled import load_labelled_task

    serve(server, "citation_intent", train=("ok", TRAIN), dev=("ok", DEV), test=("ok", TEST))
    assert main(["download", "citation_intent", "--data-dir", str(tmp_path), "--base-url", server.base_url]) == 0
    assert "3 files" in capsys.readouterr().out
    load_labelled_task(tmp_path, "citation_intent")
    assert "changed" not in capsys.readouterr().err
    train = tmp_path / "citation_intent" / "train.jsonl"
    train.write_bytes(train.read_bytes() + TRAIN.splitlines(keepends=True)[0])
    load_labelled_task(tmp_path, "citation_intent")
    assert "train.jsonl: changed since it was downloaded" in capsys.readouterr().err


def test_cli_download_failure_is_one_line_and_exit_2(server, tmp_path, capsys):
    from tartan.cli import main

    assert main(["download", "nosuchtask", "--data-dir", str(tmp_path), "--base-url", server.base_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "404" in err[0]
