"""`tartan sweep SWEEP.yaml`: a grid of recipes x end tasks x seeds (x any config key) run one after
another, each in a run directory of its own under the sweep's root.

    root: runs/paper_table            # like output_dir and data_dir: relative to the current folder
    recipes: [finetune, tapt]         # files beside the sweep file, or names in recipes/
    end_tasks: [citation_intent, chemprot]
    seeds: [0, 1, 2]
    grid: {domain.size: [1x, 10x]}    # optional: more axes, any config key; a mapping of names to
                                      # values names them in run ids: {muppet.tasks: {one: [sst2], two: [sst2, trec]}}
    overrides: {data_dir: ../shared/data, train.epochs: 10}           # every run
    end_task_overrides: {chemprot: {train.epochs: 5}}                 # runs of one end task
    include: sweep.yaml               # optional: another sweep file (beside this one) to start from;
                                      # this file's keys replace its keys, its mappings are merged


Resumable: every run goes through `run.train`, which reads a finished run back, resumes a killed
one from its checkpoint and refuses a folder holding a run of another config; a run that raises is recorded with its error in ROOT/sweep_status.json and the sweep
goes on. Pre-training stages shared between runs are computed once (the stage store of run.py).
Runs go seed by seed, so that a sweep stopped half-way has every method at its first seeds."""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import hashlib
import itertools
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from .config import Config, load_config, read_yaml
from .errors import TartanError, first_line
from .rundir import CHECKPOINT, CONFIG, METRICS, existing_dir, read_json, write_json_atomic

STATUS = "sweep_status.json"
# one entry per `tartan sweep` invocation (started, seconds, jobs, runs trained or failed), updated
# every minute: a grid run over several sittings, some killed, still adds up to a total wall time
SESSIONS = "sweep_sessions.json"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
KEYS = ("root", "recipes", "end_tasks", "seeds", "grid", "overrides", "end_task_overrides", "include")
MERGED = ("grid", "overrides", "end_task_overrides")  # an including file adds to these rather than replacing them


@dataclass
class SweepRun:
    id: str  # END_TASK/RECIPE[/key=value...]/seedS, also its folder under the root
    config: Config


def _value(value) -> str:
    """An override's value as the config loader reads it back (YAML; JSON is YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def _recipe_path(name: str, base: Path) -> Path:
    for candidate in (base / name, base / f"{name}.yaml", RECIPES / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise TartanError(f"no recipe {name!r} (neither a file nor one of recipes/: "
                      + ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml"))) + ")")


def load_sweep(path: Path, overrides: list[str] = (), only: list[str] = ()) -> tuple[Path, list[SweepRun]]:
    """The sweep's root and its runs, every config loaded and checked before anything runs. `only`:
    shell patterns of run ids (`*/domain.size=1x/*`); a run is kept if it matches any, so a part of a
    grid (its cheap sizes, one seed) can go first without a second sweep file whose runs could drift
    from the first's."""
    path = Path(path)
    spec = read_spec(path)
    for key in ("recipes", "end_tasks", "seeds"):
        if not isinstance(spec.get(key), list) or not spec[key]:
            raise TartanError(f"{key} must be a non-empty list", path)
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, (list, dict)) or not v for v in grid.values()):
        raise TartanError("grid must map config keys to non-empty lists of values (or mappings of names to values)",
                          path)
    per_task = spec.get("end_task_overrides") or {}
    # the sweep sets these per run, last: set anywhere else they would be overwritten without a word
    settings = {"grid": list(grid), "overrides": list(spec.get("overrides") or {}),
                **{f"end_task_overrides of {task}": list(keys or {}) for task, keys in per_task.items()},
                "the command line": [item.partition("=")[0] for item in overrides]}
    for where, keys in settings.items():
        reserved = sorted(set(keys) & {"seed", "end_task", "output_dir"})
        if reserved:
            raise TartanError(f"{where} cannot set {', '.join(reserved)} (seeds and end_tasks are axes of their own, "
                              "and each run's folder is named by the sweep)", path)
    # a command-line value would beat the grid's: every run of an axis would train one value under folders
    # named for all of them
    axis_keys = sorted(set(settings["the command line"]) & set(grid))
    if axis_keys:
        raise TartanError(f"{', '.join(axis_keys)} is an axis of the sweep's grid; run a part of it with --only "
                          "instead of overriding it", path)
    base = path.parent
    root = Path(spec.get("root") or "runs/sweep").absolute()
    common = [f"{k}={_value(v)}" for k, v in (spec.get("overrides") or {}).items()]
    # each axis as (name in run ids, value) pairs: a list's values name themselves
    axes = [(key, list(values.items()) if isinstance(values, dict) else [(_value(v), v) for v in values])
            for key, values in grid.items()]
    runs = []
    for seed, end_task, recipe, values in itertools.product(spec["seeds"], spec["end_tasks"], spec["recipes"],
                                                            itertools.product(*(v for _, v in axes))):
        chosen = [f"{key}={_value(value)}" for (key, _), (_, value) in zip(axes, values)]
        named = [f"{key}={label}".replace("/", "_") for (key, _), (label, _) in zip(axes, values)]
        run_id = "/".join([str(end_task), Path(str(recipe)).stem, *named, f"seed{seed}"])
        if any(r.id == run_id for r in runs):
            raise TartanError(f"run {run_id} twice in the grid (a recipe or value listed twice?)", path)
        task_overrides = [f"{k}={_value(v)}" for k, v in (per_task.get(end_task) or {}).items()]
        try:
            config = load_config(_recipe_path(str(recipe), base),
                                 [*common, f"end_task={end_task}", *task_overrides, *chosen, *overrides,
                                  f"seed={seed}", f"output_dir={root / run_id}"])
        except TartanError as error:  # a recipe or value the sweep file names: say which file
            raise TartanError(f"run {run_id}: {error}", path) from None
        labels = [label for axis, (label, _) in zip(grid.values(), values) if isinstance(axis, dict)]
        if labels:  # reports and plots tell its runs apart by these names, not by long values
            config.name = ":".join([config.name, *map(str, labels)])
        runs.append(SweepRun(run_id, config))
    if only:
        unmatched = [p for p in only if not any(_matches(r.id, p) for r in runs)]
        if unmatched:
            raise TartanError(f"--only {unmatched[0]!r} matches no run of the sweep (run ids look like {runs[0].id})", path)
        runs = [r for r in runs if any(_matches(r.id, p) for p in only)]
    return root, runs


def read_spec(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The sweep file's keys, those of the file it includes (and so on) underneath: sweeps that vary
    one thing of another sweep (its batching, R3F) say only what they change, so their shared
    budget cannot drift apart."""
    spec = read_yaml(path, "sweep file") or {}
    if not isinstance(spec, dict):
        raise TartanError("expected a mapping of sweep keys", path)
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise TartanError(f"unknown sweep key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})", path)
    merged = {}
    if "include" in spec:
        included = (path.parent / str(spec.pop("include"))).resolve()
        if included in seen or included == path.resolve():
            raise TartanError(f"includes {included.name} in a cycle", path)
        merged = read_spec(included, (*seen, path.resolve()))
    for key, value in spec.items():
        if key in MERGED and isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = {**merged[key], **value}
        merged[key] = value
    check_shapes(merged, path)
    # checked per file: an included sweep may name end tasks its includer leaves out, but a file's
    # own overrides for an end task it does not run are most likely a misspelt name, dropped unseen
    own = spec.get("end_task_overrides")
    stray = sorted(set(map(str, own)) - set(map(str, merged.get("end_tasks") or []))) if isinstance(own, dict) else []
    if stray:
        raise TartanError(f"end_task_overrides names {', '.join(stray)}, not one of end_tasks", path)
    return merged


SHAPES = {  # key -> (what it must be, check)
    "root": ("a folder name", lambda v: isinstance(v, str) and v.strip() != ""),
    "recipes": ("a list of recipe names", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "end_tasks": ("a list of task names", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "seeds": ("a list of integers", lambda v: isinstance(v, list)
              and all(isinstance(x, int) and not isinstance(x, bool) for x in v)),
    "grid": ("a mapping of config keys to lists of values (or mappings of names to values)",
             lambda v: isinstance(v, dict) and all(isinstance(x, (list, dict)) and x for x in v.values())),
    "overrides": ("a mapping of config keys to values", lambda v: isinstance(v, dict)),
    "end_task_overrides": ("a mapping of end tasks to mappings of config keys to values",
                           lambda v: isinstance(v, dict) and all(isinstance(x, dict) or x is None for x in v.values())),
}


def check_shapes(spec: dict, path: Path) -> None:
    """Each sweep key holds what it must (a list where a list is meant...): one line naming the key."""
    for key, (what, fits) in SHAPES.items():
        if spec.get(key) is not None and not fits(spec[key]):
            raise TartanError(f"{key} must be {what}, got {spec[key]!r}", path)


def read_status(root: Path) -> dict:
    path = Path(root) / STATUS
    if not path.is_file():
        return {}
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TartanError(f"malformed sweep status ({first_line(error)}): delete it to rebuild it", path) from None
    if not isinstance(status, dict) or not all(isinstance(v, dict) for v in status.values()):
        raise TartanError("sweep status must map run ids to their status: delete it to rebuild it", path)
    return status


def _matches(run_id: str, pattern: str) -> bool:
    """A run id as --dry-run prints it, or a pattern: an id holding a list value (`[a, b]`) would
    read as a character class, and match nothing, if it were only a pattern."""
    return run_id == pattern or fnmatch.fnmatchcase(run_id, pattern)


def run_states(root: Path, runs: list[SweepRun]) -> list[tuple[str, str]]:
    """Where each run stands, as (kind, detail): done, failed, checkpoint (stage and step it resumes
    from), begun (no checkpoint yet: it starts over) or to do."""
    status, states = read_status(root), []
    for run in runs:
        run_dir, entry = Path(run.config.output_dir), status.get(run.id, {})
        if (other := _other_config(run)) is not None:
            states.append(("other config", other))
        elif (run_dir / METRICS).is_file():
            seconds = entry.get("seconds") if entry.get("status") == "done" else None
            states.append(("done", f"{seconds:,.0f} s" if seconds is not None else ""))
        elif entry.get("status") == "failed" and not _checkpointed_since(run_dir, entry):
            states.append(("failed", entry.get("error", "?")))
        elif (resumes_from := _latest_checkpoint(run_dir)) is not None:
            from .training.checkpoint import checkpoint_state  # torch: only when a run has a checkpoint

            stage, last = resumes_from
            states.append(("checkpoint", f"{stage} step {checkpoint_state(last)['loop']['step']}"))
        elif run_dir.is_dir():
            states.append(("begun", ""))
        else:
            states.append(("to do", ""))
    return states


def _other_config(run: SweepRun) -> str | None:
    """Why the run's folder holds a run the sweep would refuse (the sweep file changed since it
    trained, or it would resume at another precision), as training says it; None where it holds
    this run or nothing. A finished run of another config is not "done": its metrics answer
    another question."""
    if not (Path(run.config.output_dir) / CONFIG).is_file():
        return None
    from .run import PRECISION_SECTIONS, finished_result, resolve  # torch: only for a folder with a run
    from .training.device import resolve_device

    config = copy.deepcopy(run.config)
    requested_precision = {section: getattr(config, section).precision for section in PRECISION_SECTIONS}
    config = resolve(config)
    try:
        finished_result(config, Path(config.output_dir), resolve_device(config.device), requested_precision)
    except TartanError as error:
        return error.message
    return None


def _checkpointed_since(run_dir: Path, failure: dict) -> bool:
    """Whether the run wrote a checkpoint after it failed: started again, it trained on (and may have
    been stopped since), so the failure is no longer where it stands."""
    latest = _latest_checkpoint(run_dir)
    failed_at = failure.get("time")
    return latest is not None and isinstance(failed_at, (int, float)) and \
        (latest[1] / "state.json").stat().st_mtime > failed_at


def _latest_checkpoint(run_dir: Path) -> tuple[str, Path] | None:
    """(stage, folder) of the checkpoint written last in a run directory, if it has one."""
    found = [(last.stat().st_mtime, stage.name, last) for stage in (run_dir / CHECKPOINT).glob("*")
             if (last := existing_dir(stage / "last")) is not None and (last / "state.json").is_file()]
    return max(found)[1:] if found else None


def run_sweep(path: Path, overrides: list[str] = (), progress: bool = True, train_fn=None, jobs: int = 1,
              only: list[str] = ()) -> dict:
    """Run every run of the sweep not finished yet; returns the status of every run. With jobs > 1,
    that many runs train at once, each in a fresh process with its share of the CPU threads (on 2
    cores two 1-thread runs get through ~1.2x the steps of one 2-thread run: small matrices do not
    keep two threads busy); once nothing is left to start, the runs still training take the threads
    of those that finished."""
    from tqdm.auto import tqdm

    from .run import train

    train_fn = train_fn or train
    root, runs = load_sweep(path, overrides, only)
    status = read_status(root)
    # runs finished before this call count as done from the start, so that the time-left estimate
    # comes from runs trained now
    finished = {r.id for r in runs if (Path(r.config.output_dir) / "metrics.json").is_file()}
    session = SessionLog(root, jobs)
    bar = tqdm(total=len(runs), initial=len(finished), desc="sweep", unit="run", disable=not progress,
               dynamic_ncols=True)

    def record(run: SweepRun, metrics: dict | None, seconds: float, error: BaseException | None) -> None:
        # read again before writing, so that another sweep on this root (other --only runs, another
        # machine on a shared disk) keeps the entries it recorded since this one started
        status.update(read_status(root))
        previous = status.get(run.id, {})
        if error is None:
            if run.id in finished and previous.get("status") == "done" and previous.get("seconds") is not None:
                seconds = previous["seconds"]  # read back: the time it took when it trained
            status[run.id] = {"status": "done", "test": (metrics.get("test") or {}).get(metrics.get("metric")),
                              "seconds": round(seconds, 1)}
        else:  # a failed run is recorded; the rest of the grid still runs
            status[run.id] = {"status": "failed", "seconds": round(seconds, 1), "time": time.time(),
                              "error": f"{type(error).__name__}: {error}",
                              "traceback": "".join(traceback.format_exception(error, limit=5))}
            print(f"sweep: {run.id} failed: {type(error).__name__}: {error}", file=sys.stderr)
        write_json_atomic(root / STATUS, status)
        if run.id not in finished:
            bar.update(1)
        if run.id not in finished or error is not None:  # a finished run read back was not attempted
            session.count_run()

    try:
        _run_all(runs, jobs, train_fn, record, bar)
    finally:
        session.close()
        bar.close()
    return {r.id: status[r.id] for r in runs}  # entries of runs no longer in the sweep stay in the file only


def _run_all(runs: list[SweepRun], jobs: int, train_fn, record, bar) -> None:
    if jobs <= 1:
        for run in runs:
            bar.set_postfix_str(run.id)
            started = time.perf_counter()
            # every run goes through run.train: a finished one is read back at once, and one whose
            # folder holds a run of another config (the sweep file changed) is an error, not "done"
            try:
                metrics, error = train_fn(run.config), None
            except KeyboardInterrupt:
                raise
            except Exception as raised:
                metrics, error = None, raised
            record(run, metrics, time.perf_counter() - started, error)
    else:
        _run_parallel(runs, jobs, train_fn, record)


class SessionLog:
    """This invocation's entry in ROOT/sweep_sessions.json: written when the sweep starts, then every
    `every` seconds and after every run, so that a sweep killed mid-run loses at most that much of
    its wall time. The file is read again before each write, so that another sweep on the same root
    keeps its entries."""

    def __init__(self, root: Path, jobs: int, every: float = 60.0):
        self.path = Path(root) / SESSIONS
        self.entry = {"id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "seconds": 0.0, "jobs": jobs, "runs_attempted": 0}
        self._start = time.perf_counter()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.write()
        threading.Thread(target=self._beat, args=(every,), daemon=True).start()

    def _beat(self, every: float) -> None:
        while not self._stopped.wait(every):
            self.write()

    def count_run(self) -> None:
        with self._lock:
            self.entry["runs_attempted"] += 1
        self.write()

    def write(self) -> None:
        with self._lock:
            # milliseconds: a sitting that only reads finished runs back lasts well under 0.1 s, and
            # rounding it to 0.0 would look like a sitting that never ran
            self.entry["seconds"] = round(time.perf_counter() - self._start, 3)
            sessions = read_sessions(self.path.parent)
            mine = [i for i, s in enumerate(sessions) if s.get("id") == self.entry["id"]]
            if mine:
                sessions[mine[0]] = self.entry
            else:
                sessions.append(self.entry)
            write_json_atomic(self.path, sessions)

    def close(self) -> None:
        self._stopped.set()
        self.write()


def read_sessions(root: Path) -> list[dict]:
    path = Path(root) / SESSIONS
    if not path.is_file():
        return []
    return read_json(path, list, "a list of sweep sessions")


def _run_parallel(runs: list[SweepRun], jobs: int, train_fn, record) -> None:
    """`jobs` runs at a time, each in a process of its own (fresh per run, so that nothing one run
    allocates stays with the next), in the sweep's order. `train_fn` must pickle (a module-level
    function)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs)
    context = multiprocessing.get_context("spawn")
    # the CPU threads each running run may use, which the workers follow as it changes: the last runs
    # of a sweep, with nothing left to start beside them, would otherwise leave finished runs' cores idle
    thread_share = context.Value("i", threads)
    pending = list(runs)
    # runs that were training when a worker died: the pool cannot say whose worker it was, so each
    # suspect trains again alone (from its checkpoint), and only a run that breaks the pool alone fails
    suspects: set[str] = set()

    def pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1,
                                   initializer=_init_worker, initargs=(thread_share, os.getpid()))

    executor, running = pool(), {}
    # on a machine with GPUs, runs that may use one are spread over them, several to a GPU when
    # there are more jobs than GPUs: a small model leaves most of a GPU idle
    gpus, placed = _gpu_count(), {}
    signatures = {run.id: stage_signatures(run.config) for run in runs}
    try:
        while pending or running:
            while pending and len(running) < jobs and not suspects & {r.id for r in running.values()}:
                index = next_run(pending, list(running.values()), signatures)
                if pending[index].id in suspects and running:
                    break  # a suspect waits for the others to finish
                run = pending.pop(index)
                config, gpu = on_gpu(run.config, gpus, list(placed.values()))
                future = executor.submit(_train_timed, train_fn, config)
                running[future] = run
                if gpu is not None:
                    placed[future] = gpu
            # fewer running than jobs only when nothing can start: those running share the cores
            thread_share.value = max(threads, cores // max(1, len(running)))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                if future not in running:  # handed back to pending when the pool broke
                    continue
                run = running.pop(future)
                placed.pop(future, None)
                suspects.discard(run.id)  # settled now, unless the pool broke under it with others
                try:
                    metrics, seconds = future.result()
                    record(run, metrics, seconds, None)
                except BrokenProcessPool as error:  # a worker died (killed, out of memory): a new pool
                    broken = [run] + [running.pop(f) for f in list(running)]
                    placed.clear()
                    executor.shutdown(wait=False, cancel_futures=True)
                    executor = pool()
                    if len(broken) == 1:
                        record(run, None, 0.0, error)
                    else:
                        suspects.update(r.id for r in broken)
                        pending = broken + pending
                except Exception as error:
                    record(run, None, getattr(error, "seconds", 0.0), error)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def on_gpu(config: Config, gpus: int, busy: list[int]) -> tuple[Config, int | None]:
    """The run's config placed on the GPU that holds the fewest running runs (`busy`: the GPU of
    each), and that GPU; unchanged where there is none or the run names its device (cpu, cuda:N)."""
    if gpus == 0 or config.device not in ("auto", "cuda"):
        return config, None
    gpu = min(range(gpus), key=lambda k: (busy.count(k), k))
    return dataclasses.replace(config, device=f"cuda:{gpu}"), gpu


def next_run(pending: list[SweepRun], running: list[SweepRun], signatures: dict[str, set[str]]) -> int:
    """The index of the pending run to start: the first that computes no pre-training stage a
    running run computes, so that it finds the stage stored later instead of computing it a second
    time at once; the first of all when every pending run shares one (it then waits on the stage's
    lock in run.train, and reuses the stage once stored)."""
    busy = set().union(*(signatures[r.id] for r in running))
    return next((i for i, r in enumerate(pending) if not signatures[r.id] & busy), 0)


def stage_signatures(config: Config) -> set[str]:
    """Stand-ins for the keys of the reusable (pre-training) stages a run computes: run.stage_key
    without the data digests, which would mean reading the data; the data folder stands in for them,
    and the end task too where a task type reads it (MLM), so that a stage over other tasks only
    (MUPPET's) has one signature across end tasks. Equal signatures mean the same stage."""
    from .methods import methods
    from .run import stage_settings
    from .tasks import task_types

    found, previous = set(), ""
    for stage in methods.get(config.method)(config):
        if not stage.reusable:
            break
        described = {"previous": previous, "stage": stage.name, "tasks": stage.tasks, "head_init": stage.head_init,
                     "model": config.model, **stage_settings(config, stage), "data_dir": str(config.data_dir),
                     "end_task": config.end_task if any(task_types.get(kind).reads_end_task
                                                        for _, kind, _ in stage.tasks) else None}
        previous = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
        found.add(previous)
    return found


def _init_worker(thread_share, parent: int) -> None:
    """`thread_share`: a shared int, the CPU threads the sweep gives each running run now."""
    import torch

    threads = thread_share.value
    torch.set_num_threads(threads)
    if hasattr(signal, "SIGUSR1"):
        # torch's thread count holds for the thread that sets it (OpenMP's is per thread), so the
        # main thread, which trains, must set it; Python runs signal handlers in the main thread
        signal.signal(signal.SIGUSR1, lambda *_: torch.set_num_threads(thread_share.value))
    threading.Thread(target=_watch_sweep, args=(parent, thread_share, threads), daemon=True).start()


def _watch_sweep(parent: int, thread_share, passed_on: int, every: float = 2.0) -> None:
    """Passes a new thread share on to the main thread; exits once the sweep is gone: a sweep killed
    from outside (SIGTERM, SIGKILL) cannot stop its workers, which would otherwise train on, orphaned,
    while a restarted sweep put a second process on the same run folders."""
    while os.getppid() == parent:
        time.sleep(every)
        if thread_share.value != passed_on and hasattr(signal, "SIGUSR1"):
            passed_on = thread_share.value
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # no other thread interrupted
    os._exit(1)  # run folders are written atomically: the run resumes from its last checkpoint


def _train_timed(train_fn, config: Config) -> tuple[dict, float]:
    started = time.perf_counter()
    try:
        return train_fn(config), time.perf_counter() - started
    except Exception as error:
        error.seconds = time.perf_counter() - started  # travels back with the pickled exception
        raise
