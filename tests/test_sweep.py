"""tartan sweep: the grid, resume (finished runs are not retrained), failures recorded without
stopping the sweep, and the report grouping the sweep's runs."""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from tartan import run as run_module
from tartan.cli import main
from tartan.errors import TartanError
from tartan.report import build_report
from tartan.run import resolve
from tartan.sweep import (SESSIONS, STATUS, SessionLog, load_sweep, next_run, read_sessions, run_sweep,
                          stage_signatures)


def write_sweep(tmp_path, tiny_models, data_dir, **spec):
    values = {"root": str(tmp_path / "root"), "recipes": ["finetune", "tapt"], "end_tasks": ["toy"], "seeds": [0, 1],
              "overrides": {"model": str(tiny_models["bert"]), "data_dir": str(data_dir), "train.batch_size": 8,
                            "train.epochs": 1, "train.max_steps": 2, "train.precision": "fp32",
                            "train.progress": False, "data.max_length": 32, "pretrain.max_steps": 2,
                            "pretrain.batch_size": 8, "pretrain.progress": False}}
    values.update(spec)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_grid_expands_every_axis_seed_by_seed(tmp_path, tiny_models, data_dir):
    path = write_sweep(tmp_path, tiny_models, data_dir, grid={"train.lr_body": [1e-4, 3e-4]},
                       end_task_overrides={"toy": {"train.epochs": 3}})
    root, runs = load_sweep(path, ["train.patience=1"])
    assert len(runs) == 2 * 2 * 2 and root == tmp_path / "root"
    assert [r.config.seed for r in runs] == [0] * 4 + [1] * 4  # every recipe at seed 0 first
    first = runs[0]
    assert first.id == "toy/finetune/train.lr_body=0.0001/seed0"
    assert first.config.output_dir == str(root / first.id)
    assert first.config.train.epochs == 3 and first.config.train.patience == 1 and first.config.name == "finetune"
    assert {r.config.train.lr_body for r in runs} == {1e-4, 3e-4}


def test_a_grid_of_named_values_names_its_runs_and_sets_the_values(tmp_path, tiny_models, data_dir):
    path = write_sweep(tmp_path, tiny_models, data_dir, recipes=["muppet"], seeds=[0],
                       grid={"muppet.tasks": {"one": ["toy_pairs"], "two": ["toy_pairs", "toy_pairs"]}})
    _, runs = load_sweep(path)
    assert [r.id for r in runs] == ["toy/muppet/muppet.tasks=one/seed0", "toy/muppet/muppet.tasks=two/seed0"]
    assert [r.config.muppet.tasks for r in runs] == [["toy_pairs"], ["toy_pairs", "toy_pairs"]]
    assert [r.config.name for r in runs] == ["muppet:one", "muppet:two"]  # a report's rows


def test_an_included_sweep_is_the_base_its_includer_changes(tmp_path, tiny_models, data_dir):
    base = write_sweep(tmp_path, tiny_models, data_dir, grid={"train.lr_body": [1e-4]})
    (tmp_path / "variant").mkdir()
    variant = tmp_path / "variant" / "r3f.yaml"
    variant.write_text(yaml.safe_dump({"include": "../sweep.yaml", "root": str(tmp_path / "variant_root"),
                                       "recipes": ["finetune"], "overrides": {"train.patience": 1}}))
    root, runs = load_sweep(variant)
    assert root == tmp_path / "variant_root" and len(runs) == 2  # recipes replaced, seeds inherited
    assert [r.id for r in runs] == ["toy/finetune/train.lr_body=0.0001/seed0", "toy/finetune/train.lr_body=0.0001/seed1"]
    # overrides merged: the base's budget kept, the variant's key added
    assert runs[0].config.train.patience == 1 and runs[0].config.train.max_steps == 2
    _, base_runs = load_sweep(base)
    assert base_runs[0].config.train.patience != 1


def test_only_keeps_the_runs_a_pattern_matches(tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir, grid={"domain.size": ["1x", "10x"]})
    _, runs = load_sweep(path, only=["*/domain.size=1x/*", "toy/tapt/*/seed1"])
    assert [r.id for r in runs] == ["toy/finetune/domain.size=1x/seed0", "toy/tapt/domain.size=1x/seed0",
                                    "toy/finetune/domain.size=1x/seed1", "toy/tapt/domain.size=1x/seed1",
                                    "toy/tapt/domain.size=10x/seed1"]
    # a pattern that matches nothing is a typo: one line, nothing run
    capsys.readouterr()  # only what the command prints (not a tiny model's first build)
    assert main(["sweep", str(path), "--only", "*/domain.size=2x/*"]) == 2
    error = capsys.readouterr().err.strip()
    assert "matches no run" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "root").exists()


def test_a_sweep_including_itself_is_one_line(tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir, include="sweep.yaml")
    capsys.readouterr()  # only what the command prints (not a tiny model's first build)
    assert main(["sweep", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "in a cycle" in error and len(error.splitlines()) == 1


def test_sweep_runs_resumes_and_records_a_failed_run(tmp_path, tiny_models, data_dir, monkeypatch):
    # end task `missing` has no folder: its runs fail, the others still run
    path = write_sweep(tmp_path, tiny_models, data_dir, end_tasks=["missing", "toy"], recipes=["finetune"])
    calls = []
    real_train = run_module.train

    def counting_train(config, **kwargs):
        calls.append(config.output_dir)
        return real_train(config, **kwargs)

    status = run_sweep(path, progress=False, train_fn=counting_train)
    assert {k: v["status"] for k, v in status.items()} == {
        "missing/finetune/seed0": "failed", "toy/finetune/seed0": "done",
        "missing/finetune/seed1": "failed", "toy/finetune/seed1": "done"}
    assert "missing" in status["missing/finetune/seed0"]["error"]
    assert json.loads((tmp_path / "root" / STATUS).read_text()) == status
    assert (tmp_path / "root" / "toy/finetune/seed1/metrics.json").is_file()

    finished = tmp_path / "root" / "toy/finetune/seed0/metrics.json"
    written = finished.stat().st_mtime_ns
    status = run_sweep(path, progress=False, train_fn=counting_train)  # again: finished runs are read back
    assert finished.stat().st_mtime_ns == written and status["toy/finetune/seed0"]["status"] == "done"
    assert status["missing/finetune/seed0"]["status"] == "failed"  # tried again, failed again
    assert abs(status["missing/finetune/seed0"]["time"] - time.time()) < 600  # when: --dry-run weighs a later checkpoint

    # a changed sweep does not pass a finished run with another config off as done
    path.write_text(path.read_text().replace("train.max_steps: 2", "train.max_steps: 3"))
    status = run_sweep(path, progress=False, train_fn=counting_train)
    assert status["toy/finetune/seed0"]["status"] == "failed"
    assert "holds a run with another config" in status["toy/finetune/seed0"]["error"]

    # every invocation keeps its wall time, so that a grid run over several sittings adds up; a
    # finished run read back is not an attempt, one that fails is
    sessions = json.loads((tmp_path / "root" / SESSIONS).read_text())
    assert [s["runs_attempted"] for s in sessions] == [4, 2, 4] and all(s["seconds"] > 0 for s in sessions)


def test_two_sweeps_on_one_root_keep_each_others_status(tmp_path, tiny_models, data_dir):
    # a second sweep over other runs (--only) records its run while the first is training: the
    # first's record, written later, must not drop it
    path = write_sweep(tmp_path, tiny_models, data_dir, recipes=["finetune"], seeds=[0, 1])
    metrics = {"metric": "macro_f1", "dev": {"macro_f1": 0.5}, "test": {"macro_f1": 0.4}}
    inner = lambda config, **kwargs: metrics

    def outer(config, **kwargs):
        run_sweep(path, progress=False, train_fn=inner, only=["*/seed1"])
        return metrics

    run_sweep(path, progress=False, train_fn=outer, only=["*/seed0"])
    on_disk = json.loads((tmp_path / "root" / STATUS).read_text())
    assert {k: v["status"] for k, v in on_disk.items()} == {"toy/finetune/seed0": "done", "toy/finetune/seed1": "done"}


def test_a_run_without_test_figures_is_done_not_a_crash(tmp_path, tiny_models, data_dir):
    # an end task without a test split: metrics.json holds "test": null
    path = write_sweep(tmp_path, tiny_models, data_dir, recipes=["finetune"], seeds=[0])
    no_test = lambda config, **kwargs: {"metric": "macro_f1", "dev": {"macro_f1": 0.5}, "test": None}
    status = run_sweep(path, progress=False, train_fn=no_test)
    assert status["toy/finetune/seed0"]["status"] == "done" and status["toy/finetune/seed0"]["test"] is None


def test_dry_run_says_where_each_run_stands_and_how_long_the_sweep_has_run(tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir, seeds=[0, 1, 2])
    root = tmp_path / "root"
    (root / "toy/finetune/seed0").mkdir(parents=True)
    (root / "toy/finetune/seed0/metrics.json").write_text("{}")
    last = root / "toy/tapt/seed0/checkpoint/finetune/last"  # the checkpoint of the run's second stage
    last.mkdir(parents=True)
    (last / "state.json").write_text(json.dumps({"loop": {"step": 150}, "strategy": {}}))
    (root / "toy/finetune/seed1").mkdir(parents=True)  # begun, killed before its first checkpoint
    (root / STATUS).write_text(json.dumps({"toy/finetune/seed0": {"status": "done", "seconds": 1234.4},
                                           "toy/tapt/seed1": {"status": "failed", "error": "ValueError: bad"}}))
    (root / SESSIONS).write_text(json.dumps([{"seconds": 3600.0}, {"seconds": 1800.5}]))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["toy/finetune/seed0  done (1,234 s)", "toy/tapt/seed0  checkpoint (finetune step 150)",
                                "toy/finetune/seed1  begun", "toy/tapt/seed1  failed (ValueError: bad)",
                                "toy/finetune/seed2  to do", "toy/tapt/seed2  to do"]
    assert ("6 runs under " in err and "1 done, 1 failed, 1 at a checkpoint, 1 begun (no checkpoint), 2 to do; "
            "the sweep has run 5,400 s (1.50 h) over 2 recorded sittings" in err)
    assert not (root / "toy/finetune/seed2").exists()  # it ran nothing


def test_dry_run_does_not_count_a_run_of_another_config_as_done(tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir, seeds=[0])
    root, runs = load_sweep(path)
    finished = Path(runs[0].config.output_dir)
    resolved = resolve(copy.deepcopy(runs[0].config))
    resolved.train.lr_body = 3 * resolved.train.lr_body  # the run trained before the sweep file changed
    finished.mkdir(parents=True)
    (finished / "config.yaml").write_text(yaml.safe_dump(resolved.to_dict()))
    (finished / "metrics.json").write_text("{}")
    same = Path(runs[1].config.output_dir)  # a begun run of this very config: as before
    same.mkdir(parents=True)
    (same / "config.yaml").write_text(yaml.safe_dump(resolve(copy.deepcopy(runs[1].config)).to_dict()))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{runs[0].id}  other config (holds a run with another config "
                                          "(differs in: train.lr_body)")
    assert out.splitlines()[1] == f"{runs[1].id}  begun"
    assert "0 done" in err and "1 holding a run of another config" in err


def test_session_log_is_on_disk_while_the_sweep_runs(tmp_path):
    (tmp_path / SESSIONS).write_text(json.dumps([{"id": "earlier", "seconds": 5.0}]))
    caller, beaten = threading.current_thread(), threading.Event()

    class WatchedSessionLog(SessionLog):
        def write(self) -> None:
            super().write()
            if threading.current_thread() is not caller:  # the heartbeat's, not the constructor's
                beaten.set()

    session = WatchedSessionLog(tmp_path, jobs=2, every=0.05)
    assert beaten.wait(timeout=60), "no heartbeat"
    # no run has finished: the heartbeat alone has written the time so far (at least one period)
    on_disk = json.loads((tmp_path / SESSIONS).read_text())
    assert on_disk[0]["seconds"] == 5.0 and len(on_disk) == 2 and on_disk[1]["seconds"] >= 0.05
    session.count_run()
    session.close()
    assert json.loads((tmp_path / SESSIONS).read_text())[1]["runs_attempted"] == 1


def test_malformed_sessions_file_is_one_line(tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / SESSIONS).write_text("[{")
    capsys.readouterr()  # only what the command prints (not a tiny model's first build)
    assert main(["sweep", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert f"{SESSIONS}:1: malformed JSON" in error and len(error.splitlines()) == 1


def test_sweep_command_shares_pretraining_and_reports(tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir)
    assert main(["sweep", str(path)]) == 0
    assert "4 runs done, 0 failed" in capsys.readouterr().out
    tapt = [json.loads((tmp_path / "root" / f"toy/tapt/seed{s}/metrics.json").read_text()) for s in (0, 1)]
    assert "reused" not in tapt[0]["stages"]["tapt"] and tapt[1]["stages"]["tapt"]["reused"]
    base, rows = build_report([tmp_path / "root"], "finetune")["tasks"]["toy"]
    assert base.label == "finetune" and [len(r.group.test) for r in rows] == [2, 2]


@pytest.mark.parametrize("spec, message", [({"seeds": []}, "seeds must be a non-empty list"),
                                           ({"recipes": ["nope"]}, "no recipe 'nope'"),
                                           ({"epochs": 3}, "unknown sweep key(s) epochs"),
                                           ({"grid": {"train.lr_bdy": [1]}}, "unknown config key 'train.lr_bdy'"),
                                           ({"grid": {"seed": [1, 2]}}, "grid cannot set seed"),
                                           ({"recipes": ["finetune", "finetune"]}, "twice in the grid"),
                                           ({"end_task_overrides": {"tyo": {"train.epochs": 3}}},
                                            "end_task_overrides names tyo, not one of end_tasks")])
def test_bad_sweep_is_one_line_and_runs_nothing(spec, message, tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir, **spec)
    capsys.readouterr()  # only what the command prints (not a tiny model's first build)
    assert main(["sweep", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("where, key, value, message", [
    ("overrides", "seed", 3, "overrides cannot set seed"),
    ("end_task_overrides", "output_dir", "elsewhere", "end_task_overrides of toy cannot set output_dir"),
    ("command line", "end_task", "other", "the command line cannot set end_task"),
    ("command line", "train.lr_body", 0.001, "train.lr_body is an axis of the sweep's grid")])
def test_what_the_sweep_sets_per_run_cannot_be_overridden(where, key, value, message, tmp_path, tiny_models,
                                                           data_dir, capsys):
    """Set elsewhere, a run's seed, end task, folder or grid value would be overwritten unseen, or
    would train under a folder named for another value."""
    path = write_sweep(tmp_path, tiny_models, data_dir, grid={"train.lr_body": [1e-4, 3e-4]})
    spec = yaml.safe_load(path.read_text())
    if where == "overrides":
        spec["overrides"][key] = value
    elif where == "end_task_overrides":
        spec["end_task_overrides"] = {"toy": {key: value}}
    path.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["sweep", str(path), *([f"{key}={value}"] if where == "command line" else [])]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "root").exists()
    load_sweep(path if where == "command line" else write_sweep(tmp_path, tiny_models, data_dir),
               ["train.patience=1"])  # other keys still pass on the command line


def test_parallel_jobs_run_every_run_in_processes_of_their_own(tmp_path, tiny_models, data_dir):
    path = write_sweep(tmp_path, tiny_models, data_dir, end_tasks=["missing", "toy"], recipes=["finetune"])
    status = run_sweep(path, progress=False, jobs=2)
    assert {k: v["status"] for k, v in status.items()} == {
        "missing/finetune/seed0": "failed", "toy/finetune/seed0": "done",
        "missing/finetune/seed1": "failed", "toy/finetune/seed1": "done"}
    assert "missing" in status["missing/finetune/seed0"]["error"] and status["missing/finetune/seed0"]["seconds"] > 0
    assert json.loads((tmp_path / "root" / STATUS).read_text()) == status
    for seed in (0, 1):
        metrics = json.loads((tmp_path / "root" / f"toy/finetune/seed{seed}/metrics.json").read_text())
        assert metrics["seed"] == seed and status[f"toy/finetune/seed{seed}"]["test"] == metrics["test"]["macro_f1"]
    # the same runs one at a time in this process compute the same results
    (tmp_path / "serial").mkdir()
    serial = run_sweep(write_sweep(tmp_path / "serial", tiny_models, data_dir, end_tasks=["toy"],
                                   recipes=["finetune"], root=str(tmp_path / "serial_root")), progress=False)
    # (up to the summation order of another thread count)
    assert [serial[f"toy/finetune/seed{s}"]["test"] for s in (0, 1)] == \
        pytest.approx([status[f"toy/finetune/seed{s}"]["test"] for s in (0, 1)], abs=1e-6)


def die_on_seed_1(config):
    """A worker that dies the way an out-of-memory kill ends it, while the other run still trains.
    First attempts meet at a FIFO ($TARTAN_TEST_RENDEZVOUS): seed 1's worker opens it to write and
    dies holding it; seed 0's reads it to its end, which comes when seed 1's worker is dead, so seed 0
    is running when the pool breaks. Tried again alone, seed 1 dies at once and seed 0 trains."""
    import signal
    from pathlib import Path

    rendezvous = Path(os.environ["TARTAN_TEST_RENDEZVOUS"])
    try:
        (rendezvous.parent / f"seed{config.seed}.tried").touch(exist_ok=False)
        first = True
    except FileExistsError:
        first = False
    signal.alarm(120)  # a worker that never meets the other dies rather than hang the test
    if config.seed == 1:
        if first:
            open(rendezvous, "w")  # returns once seed 0's worker opens it to read
        os._exit(1)
    if first:
        with open(rendezvous) as pipe:  # returns once seed 1's worker opens it to write
            pipe.read()  # the end: seed 1's worker is dead
    signal.alarm(0)
    return run_module.train(config)


def test_a_dead_worker_fails_its_own_run_only(tmp_path, tiny_models, data_dir, monkeypatch):
    # when a worker dies the pool breaks under both running runs; the sweep cannot tell whose worker
    # it was, so both train again alone and only the run that kills its worker alone is failed
    path = write_sweep(tmp_path, tiny_models, data_dir, end_tasks=["toy"], recipes=["finetune"])
    (tmp_path / "meet").mkdir()
    os.mkfifo(tmp_path / "meet" / "fifo")
    monkeypatch.setenv("TARTAN_TEST_RENDEZVOUS", str(tmp_path / "meet" / "fifo"))  # the workers inherit it
    status = run_sweep(path, progress=False, jobs=2, train_fn=die_on_seed_1)
    assert status["toy/finetune/seed0"]["status"] == "done"
    assert status["toy/finetune/seed1"]["status"] == "failed"
    assert "BrokenProcessPool" in status["toy/finetune/seed1"]["error"]
    assert (tmp_path / "root" / "toy/finetune/seed0/metrics.json").is_file()


def note_threads(config):
    """A worker that notes the CPU threads it starts with; seed 1's then waits (60 s at most) for
    more, which the sweep gives once seed 0 has finished and nothing is left to start."""
    import time
    from pathlib import Path

    import torch

    seen = [torch.get_num_threads()]
    if config.seed == 1:
        deadline = time.monotonic() + 60
        while torch.get_num_threads() == seen[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(torch.get_num_threads())
    Path(os.environ["TARTAN_TEST_THREADS"], f"seed{config.seed}").write_text(json.dumps(seen))
    return run_module.train(config)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no threads to hand on")
def test_the_last_running_run_takes_the_threads_of_finished_runs(tmp_path, tiny_models, data_dir, monkeypatch):
    cores = len(os.sched_getaffinity(0))
    (tmp_path / "threads").mkdir()
    monkeypatch.setenv("TARTAN_TEST_THREADS", str(tmp_path / "threads"))
    path = write_sweep(tmp_path, tiny_models, data_dir, end_tasks=["toy"], recipes=["finetune"])
    status = run_sweep(path, progress=False, jobs=2, train_fn=note_threads)
    assert all(v["status"] == "done" for v in status.values())
    seen = {seed: json.loads((tmp_path / "threads" / f"seed{seed}").read_text()) for seed in (0, 1)}
    assert seen == {0: [cores // 2], 1: [cores // 2, cores]}


def test_workers_exit_when_the_sweep_is_killed(tmp_path):
    # a parent that starts a worker the way the sweep does, reports the worker's pid, then dies
    # without any chance to clean up (SIGKILL): the worker must not train on, orphaned (the parent and
    # its worker sleep only to be there when killed)
    import select
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from tartan.sweep import _init_worker\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),\n"
        "                               initializer=_init_worker,\n"
        "                               initargs=(multiprocessing.get_context('spawn').Value('i', 1), os.getpid()))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 600)\n"
        "    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)  # alive
    watch = os.pidfd_open(worker)  # before the kill: the pid cannot be reused while this is open
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # readable once the worker has ended (a zombie too, that a non-reaping PID 1 leaves behind);
        # the worker looks for its parent every 2 s
        ended = select.select([watch], [], [], 30)[0]
    finally:
        os.close(watch)
    if not ended:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its sweep by 30 s")


def test_a_run_waits_while_another_computes_its_pretraining_stage(tmp_path, tiny_models, data_dir):
    path = write_sweep(tmp_path, tiny_models, data_dir, recipes=["finetune", "dapt", "tapt", "dapt_tapt", "mt_tartan"],
                       end_tasks=["toy"], seeds=[0])
    _, runs = load_sweep(path)
    signatures = {run.id: stage_signatures(run.config) for run in runs}
    by_recipe = {run.id.split("/")[1]: run for run in runs}
    dapt, tapt, dapt_tapt = (signatures[by_recipe[name].id] for name in ("dapt", "tapt", "dapt_tapt"))
    assert len(dapt) == 1 and dapt < dapt_tapt and not tapt & dapt_tapt and not signatures[by_recipe["finetune"].id]
    # dapt is training: dapt_tapt (its DAPT stage) is passed over for mt_tartan, which needs none
    pending = [by_recipe["dapt_tapt"], by_recipe["mt_tartan"]]
    assert next_run(pending, [by_recipe["dapt"]], signatures) == 1
    assert next_run(pending, [by_recipe["tapt"]], signatures) == 0
    assert next_run(pending[:1], [by_recipe["dapt"]], signatures) == 0  # nothing else to run: it goes
    # a DAPT stage with another budget is another stage
    other = load_sweep(write_sweep(tmp_path, tiny_models, data_dir, recipes=["dapt"], end_tasks=["toy"], seeds=[0],
                                   overrides={**yaml.safe_load(path.read_text())["overrides"],
                                              "pretrain.max_steps": 3}))[1][0]
    assert not stage_signatures(other.config) & dapt


def test_a_stage_over_other_tasks_only_has_one_signature_across_end_tasks(tmp_path, tiny_models, data_dir):
    # MUPPET's pre-finetuning reads only its own task folders: the same stage for every end task, so
    # a run of one end task waits while another end task's run computes it; TAPT reads the end task
    path = write_sweep(tmp_path, tiny_models, data_dir, recipes=["muppet", "tapt"], end_tasks=["toy", "other"],
                       seeds=[0])
    spec = yaml.safe_load(path.read_text())
    spec["overrides"].update({"muppet.tasks": ["toy_pairs"], "muppet.max_steps": 2})
    path.write_text(yaml.safe_dump(spec))
    _, runs = load_sweep(path)
    signatures = {run.id: stage_signatures(run.config) for run in runs}
    assert signatures["toy/muppet/seed0"] == signatures["other/muppet/seed0"] != set()
    # nor on the end task's share of its train set
    fraction = load_sweep(path, ["data.train_fraction=0.5"])[1]
    assert stage_signatures(fraction[0].config) == signatures["toy/muppet/seed0"]
    assert not signatures["toy/tapt/seed0"] & signatures["other/tapt/seed0"]
    by_id = {run.id: run for run in runs}
    pending = [by_id["other/muppet/seed0"], by_id["other/tapt/seed0"]]
    assert next_run(pending, [by_id["toy/muppet/seed0"]], signatures) == 1


def test_a_stage_capped_by_train_max_steps_has_the_signature_of_its_cap(tmp_path, tiny_models, data_dir):
    # write_sweep sets pretrain.max_steps; without it train.max_steps caps the TAPT stage, so runs
    # that differ in train.max_steps compute different stages (and may run side by side)
    path = write_sweep(tmp_path, tiny_models, data_dir, recipes=["tapt"], seeds=[0], grid={"train.max_steps": [2, 3]})
    spec = yaml.safe_load(path.read_text())
    del spec["overrides"]["pretrain.max_steps"]
    path.write_text(yaml.safe_dump(spec))
    _, runs = load_sweep(path)
    first, second = (stage_signatures(run.config) for run in runs)
    assert first and second and not first & second
    spec["overrides"]["pretrain.max_steps"] = 5  # a stage's own cap stands: one stage for both
    path.write_text(yaml.safe_dump(spec))
    _, runs = load_sweep(path)
    first, second = (stage_signatures(run.config) for run in runs)
    assert first == second


def record_device(config):
    """A worker that notes the device the sweep gave its run, then trains it on the CPU (the machine
    running the test may have no GPU)."""
    import dataclasses
    from pathlib import Path

    Path(os.environ["TARTAN_TEST_DEVICES"], f"seed{config.seed}").write_text(config.device)
    return run_module.train(dataclasses.replace(config, device="cpu"))


def test_jobs_are_spread_over_the_gpus_several_to_a_gpu(tmp_path, tiny_models, data_dir, monkeypatch):
    import tartan.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "_gpu_count", lambda: 2)  # what the sweep sees of the machine
    (tmp_path / "devices").mkdir()
    monkeypatch.setenv("TARTAN_TEST_DEVICES", str(tmp_path / "devices"))
    path = write_sweep(tmp_path, tiny_models, data_dir, recipes=["finetune"], seeds=[0, 1, 2])
    status = run_sweep(path, progress=False, jobs=3, train_fn=record_device)
    assert all(v["status"] == "done" for v in status.values())
    # three jobs at once on two GPUs: the third shares the emptier (first) one
    assert [(tmp_path / "devices" / f"seed{s}").read_text() for s in (0, 1, 2)] == ["cuda:0", "cuda:1", "cuda:0"]


def test_a_run_that_names_its_device_keeps_it():
    from tartan.config import Config
    from tartan.sweep import on_gpu

    assert on_gpu(Config(device="cpu"), 2, [])[0].device == "cpu"
    assert on_gpu(Config(device="cuda:1"), 2, [])[0].device == "cuda:1"
    assert on_gpu(Config(), 0, []) == (Config(), None)  # no GPU: auto stays auto
    assert on_gpu(Config(), 2, [0, 0, 1])[1] == 1


@pytest.mark.parametrize("content, message", [(b"[{}", "malformed JSON"), (b'["\xff"]', "not UTF-8 text"),
                                              (b"{}", "expected a list of sweep sessions")])
def test_a_damaged_sessions_file_is_one_line_naming_it(tmp_path, content, message):
    (tmp_path / SESSIONS).write_bytes(content)
    with pytest.raises(TartanError, match=message) as caught:
        read_sessions(tmp_path)
    assert caught.value.path == str(tmp_path / SESSIONS)


def test_only_takes_a_run_id_as_dry_run_prints_it_a_list_value_too(tmp_path, tiny_models, data_dir):
    path = write_sweep(tmp_path, tiny_models, data_dir, grid={"muppet.tasks": [["toy"], ["toy", "toy_pairs"]]})
    _, runs = load_sweep(path)
    listed = next(r.id for r in runs if "toy_pairs" in r.id)
    assert "[" in listed  # fnmatch alone would read the brackets as a character class
    assert [r.id for r in load_sweep(path, only=[listed])[1]] == [listed]


def test_a_failed_run_that_checkpointed_since_stands_at_its_checkpoint(tmp_path, tiny_models, data_dir, capsys):
    path = write_sweep(tmp_path, tiny_models, data_dir, seeds=[0], recipes=["finetune"])
    root = tmp_path / "root"
    last = root / "toy/finetune/seed0/checkpoint/finetune/last"
    last.mkdir(parents=True)
    (last / "state.json").write_text(json.dumps({"loop": {"step": 40}, "strategy": {}}))
    written = (last / "state.json").stat().st_mtime
    for failed_at, expected in ((written - 60, "checkpoint (finetune step 40)"), (written + 60, "failed (ValueError: bad)")):
        (root / STATUS).write_text(json.dumps({"toy/finetune/seed0": {"status": "failed", "error": "ValueError: bad",
                                                                      "time": failed_at}}))
        assert main(["sweep", str(path), "--dry-run"]) == 0
        assert capsys.readouterr().out.splitlines() == [f"toy/finetune/seed0  {expected}"]
