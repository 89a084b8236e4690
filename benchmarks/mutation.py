"""Mutation testing of the modules that carry the research's math: does the suite notice a small
deliberate bug?

    python benchmarks/mutation.py [--out DIR] [--only tartan/weighting/meta.py ...] [--list] [--summary]

Each mutant is one operator or constant changed in one place (`+` -> `-`, `<` -> `<=`, `and` -> `or`,
`not x` -> `x`, `-x` -> `x`, `3` -> `4`, `True` -> `False`, `is None` -> `is not None`, ...). A
mutant is *killed* when a test fails (or it runs past its time), and *survives* when every test that
runs its line still passes.

How it stays under an hour on 2 cores:
- one coverage run of the modules' test files records, per line, which tests (node ids) execute it;
  a mutant runs only those tests, fastest first, stopping at the first failure (`-x`);
- torch, transformers and pytest are imported once; each mutant's tests run in a forked child that
  imports tartan afresh from a shadow copy of the package holding the mutated file (the checkout
  itself is never edited; `PYTHONPATH` points test subprocesses at the copy too);
- the tiny test models are built once (`TARTAN_TEST_MODELS`) and reused by every child.

Not mutated: function default arguments (the config's defaults, config.py, are what runs), type
annotations (they do not run), the messages of raised errors (what they say, not whether they are
raised) and progress-bar calls (display).

Results are appended to DIR/results.jsonl as they come, so a killed run resumes where it stopped; the
summary (DIR/summary.md) lists every survivor, with the reason where it is a known equivalent mutant
(EQUIVALENT below).
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the functions in scope (None: the whole module)
TARGETS: dict[str, tuple[str, ...] | None] = {
    "tartan/weighting/__init__.py": None,
    "tartan/weighting/static.py": None,
    "tartan/weighting/sum.py": None,
    "tartan/weighting/meta.py": None,
    "tartan/training/loop.py": None,
    "tartan/training/sampling.py": None,
    "tartan/tasks/__init__.py": None,
    "tartan/tasks/classification.py": None,
    "tartan/tasks/mlm.py": None,
    "tartan/data/masking.py": None,
    "tartan/report.py": ("permutation_p_value", "_smallest_p", "_mean_std"),
}
# the test files whose tests may run those modules: the coverage run measures them all once, and each
# mutant then runs the ones among their tests that execute its line
TEST_FILES = ("tests/weighting", "tests/training", "tests/tasks", "tests/methods", "tests/data/test_masking.py",
              "tests/test_report.py", "tests/test_run.py", "tests/test_inference.py")

# Survivors that cannot be killed because they compute the same thing, keyed by
# (module, the original line stripped, mutation) -> why. Keyed by text, not line number, so that
# edits elsewhere in the module do not detach a reason from its mutant.
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ('tartan/training/loop.py', 'best_step: int = 0', '0 -> 1'):
        'set at the first evaluation, which always counts as an improvement, and every stage evaluates at its last step',
    ('tartan/training/loop.py', 'stale_evals: int = 0', '0 -> 1'):
        'the first evaluation always improves (there is no best yet) and resets it to 0',
    ('tartan/training/loop.py', 'if state.step >= total_steps or state.stopped_early:', '>= -> >'):
        'a stage resumed at its last step skips the loop (`while step < total`) and ends in the same _finish',
    ('tartan/training/loop.py', 'lr = scheduler.get_last_lr()[0]  # the rate this step used', '0 -> 1'):
        "group 1 is the body's no-decay group, at the body's rate like group 0",
    ('tartan/training/loop.py', 'return torch.optim.AdamW(groups, fused=True)', 'True -> False'):
        'the per-tensor AdamW computes the same update; fused is a speed choice',
    ('tartan/training/loop.py', 'self.per_epoch = len(task.train_batches(0))', '0 -> 1'):
        'every epoch has the same number of batches, only their order differs',
    ('tartan/training/loop.py', 'self._epoch, self._batches = -1, []', '1 -> 2'):
        '-2, like -1, is no epoch: the first call loads its epoch either way',
    ('tartan/training/loop.py', 'return stage.task_names[:1] if stage.select_on == "end_task" else stage.task_names', '1 -> 2'):
        'a labelled end task always has a dev split (data/labelled.py requires one), so has_dev and the first name are unchanged',
    ('tartan/training/loop.py', 'return stage.task_names[:1] if stage.select_on == "end_task" else stage.task_names', '== -> !='):
        'has_dev only: the first task of every stage that selects on its end task has dev, and every labelled task of a mean-selecting stage has one too',
    ('tartan/weighting/meta.py', 'if accelerator.num_processes > 1:  # every process trains the same head on the global batch', '> -> >='):
        'with one process the gather returns the rows unchanged',
    ('tartan/weighting/meta.py', 'if value.dim() > 1:', '> -> >='):
        "accelerate's pad_across_processes returns a tensor with no dimension 1 unchanged",
    ('tartan/training/loop.py', 'if step < warmup_steps:', '< -> <='):
        'at step == warmup both branches give 1.0: (w + 1) / (w + 1) and (total - w) / (total - w)',
    ('tartan/weighting/meta.py', 'if value.dim() > 1:', '1 -> 2'):
        'the batch tensors it skips padding then (input ids, masks) come from one global batch of one length',
    ('tartan/weighting/sum.py', 'draws = inputs.draws or dict.fromkeys(losses, 1)', '1 -> 2'):
        'an equal count for every task gives the same shares',
    ('tartan/weighting/meta.py', 'features = accelerator.gather(accelerator.pad_across_processes(features.contiguous(), dim=1))', '1 -> 2'):
        "every process's rows are cut from one global batch collated to one length, so there is nothing to pad along any dimension (issue 26's per-process collation will change this)",
    ('tartan/weighting/meta.py', 'value = accelerator.pad_across_processes(value.contiguous(), dim=1)', '1 -> 2'):
        'as above: the rows of one global batch have one length',
    ('tartan/weighting/meta.py', 'optimizer.zero_grad(set_to_none=True)', 'True -> False'):
        'every parameter of the meta head gets a gradient at every one of its steps: zeroed or None, AdamW computes the same',
    ('tartan/weighting/meta.py', 'per_epoch = len(task.shuffled_batches("train", 0, task.batch_size))', '0 -> 1'):
        'every epoch has the same number of batches',
    ('tartan/weighting/meta.py', 'per_epoch = len(task.shuffled_batches("dev", 0, self.dev_batch_size))', '0 -> 1'):
        'every epoch has the same number of batches',
    ('tartan/training/sampling.py', 'while len(sequence) < steps * k:', '< -> <='):
        'one more round of tasks is appended and never read',
    ('tartan/training/sampling.py', 'weights = np.array([sizes[n] if sampling == "natural" else 1.0 for n in names], dtype=np.float64)', '1.0 -> 2.0'):
        'the weights are normalised to probabilities',
    ('tartan/tasks/classification.py', 'self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0', '0 -> 1'):
        'padding is masked out of attention and never read: any id pads alike',
    ('tartan/tasks/classification.py', 'self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0', 'is not -> is'):
        'padding is masked out of attention and never read: any id pads alike',
    ('tartan/tasks/classification.py', 'metrics = classification_metrics(gold, logits.argmax(-1))', '-x -> x'):
        'the logits are (rows, classes): dimension 1 is the last',
    ('tartan/tasks/mlm.py', 'self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0', '0 -> 1'):
        'padding is masked out of attention and never selected: any id pads alike',
    ('tartan/tasks/mlm.py', 'self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0', 'is not -> is'):
        'padding is masked out of attention and never selected: any id pads alike',
    ('tartan/tasks/mlm.py', 'HELDOUT_SEED = 1234  # fixed held-out masks: MLM evaluations are comparable across steps and runs', '1234 -> 1235'):
        'any fixed draw number gives fixed held-out masks, which is the contract',
    ('tartan/tasks/mlm.py', 'self.special = torch.zeros(max(self.vocab_size, max(tokenizer.all_special_ids) + 1), dtype=torch.bool)', '+ -> -'):
        'len(tokenizer) counts every special token, so the vocabulary size already exceeds the largest special id',
    ('tartan/tasks/mlm.py', 'self.special = torch.zeros(max(self.vocab_size, max(tokenizer.all_special_ids) + 1), dtype=torch.bool)', '1 -> 2'):
        'as above: the vocabulary size is the larger',
    ('tartan/tasks/mlm.py', 'batch = collate(self.encoded, indices, self.pad_id, with_token_types=False)', 'False -> True'):
        'masked-LM lines are single segments: their token types are all 0, which is what the body assumes without them',
    ('tartan/tasks/mlm.py', 'word_ids = torch.full(ids.shape, -1, dtype=torch.long)', '-x -> x'):
        "the filler sits only at padding, which is never maskable, and no word's draw changes",
    ('tartan/tasks/mlm.py', 'word_ids = torch.full(ids.shape, -1, dtype=torch.long)', '1 -> 2'):
        '-2 is clamped to 0 like -1, at positions that are never maskable',
    ('tartan/tasks/mlm.py', 'correct += int((logits.argmax(-1) == targets).sum())', '-x -> x'):
        'the logits are (tokens, vocabulary): dimension 1 is the last',
    ('tartan/tasks/mlm.py', 'return output.sum() * 0.0', '0.0 -> 1.0'):
        'the output there has no rows: its sum is 0 whatever it is multiplied by',
    ('tartan/data/masking.py', 'IGNORE = -100', '100 -> 101'):
        "IGNORE is only ever compared with itself (and passed as cross-entropy's ignore_index): any value no token id takes works",
    ('tartan/data/masking.py', 'selected = (torch.rand(input_ids.shape, generator=generator) < probability) & maskable', '< -> <='):
        'torch.rand draws multiples of 2**-24: it hits the boundary with probability 6e-8 a token',
    ('tartan/data/masking.py', 'draw = torch.rand((input_ids.shape[0], int(words.max()) + 1), generator=generator) < probability', '< -> <='):
        'torch.rand draws multiples of 2**-24: it hits the boundary with probability 6e-8 a token',
    ('tartan/data/masking.py', 'to_mask = selected & (roll < 0.8)', '< -> <='):
        'torch.rand draws multiples of 2**-24: it hits the boundary with probability 6e-8 a token',
    ('tartan/data/masking.py', 'to_random = selected & (roll >= 0.8) & (roll < 0.9)', '< -> <='):
        'torch.rand draws multiples of 2**-24: it hits the boundary with probability 6e-8 a token',
    ('tartan/data/masking.py', 'to_random = selected & (roll >= 0.8) & (roll < 0.9)', '>= -> >'):
        'torch.rand draws multiples of 2**-24: it hits the boundary with probability 6e-8 a token',
}

SWAP_BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
               ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
               ast.LShift: ast.RShift, ast.RShift: ast.LShift}
SWAP_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
SWAP_BOOL = {ast.And: ast.Or, ast.Or: ast.And}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
          ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>", ast.Lt: "<", ast.LtE: "<=",
          ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not",
          ast.In: "in", ast.NotIn: "not in", ast.And: "and", ast.Or: "or"}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # the index-th mutable node of the module, in ast.walk order
    line: int
    function: str
    description: str
    source_line: str

    @property
    def key(self) -> str:
        return f"{self.module}:{self.index}:{self.description}"


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """Nodes never mutated: annotations, default arguments, docstrings, decorators, and the message
    of a raised error (what it says, not whether it is raised)."""
    skipped: set[int] = set()

    def skip(node):
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip(node.returns)
            for argument in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                skip(argument.annotation)
            for default in node.args.defaults + node.args.kw_defaults:
                skip(default)
            for decorator in node.decorator_list:
                skip(decorator)
        elif isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                skip(decorator)
        elif isinstance(node, ast.Raise):
            skip(node.exc)
        elif isinstance(node, ast.JoinedStr):
            skip(node)
        elif isinstance(node, ast.Call) and _is_display(node.func):
            skip(node)
    return skipped


def _is_display(function: ast.AST) -> bool:
    """A progress bar's construction or update: what it shows, not what is trained."""
    if isinstance(function, ast.Name):
        return function.id == "tqdm"
    return isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id == "bar"


def _functions(tree: ast.AST) -> dict[int, str]:
    """id(node) -> the qualified name of the innermost function holding it."""
    owner: dict[int, str] = {}

    def visit(node, name):
        for child in ast.iter_child_nodes(node):
            inner = name
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{name}.{child.name}" if name else child.name
            owner[id(child)] = inner
            visit(child, inner)

    visit(tree, "")
    return owner


def _mutation(node: ast.AST) -> str | None:
    """What one mutation of `node` does, or None if it has none."""
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAP_BINARY:
        return f"{SYMBOL[type(node.op)]} -> {SYMBOL[SWAP_BINARY[type(node.op)]]}"
    if isinstance(node, ast.Compare) and type(node.ops[0]) in SWAP_COMPARE:
        return f"{SYMBOL[type(node.ops[0])]} -> {SYMBOL[SWAP_COMPARE[type(node.ops[0])]]}"
    if isinstance(node, ast.BoolOp):
        return f"{SYMBOL[type(node.op)]} -> {SYMBOL[SWAP_BOOL[type(node.op)]]}"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
        return {ast.Not: "not x -> x", ast.USub: "-x -> x", ast.Invert: "~x -> x"}[type(node.op)]
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            return f"{node.value} -> {not node.value}"
        if isinstance(node.value, (int, float)):
            return f"{node.value!r} -> {node.value + 1!r}"
    return None


def _apply(node: ast.AST) -> ast.AST:
    """The mutated node (a new node where the mutation replaces it)."""
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        node.op = SWAP_BINARY[type(node.op)]()
    elif isinstance(node, ast.Compare):
        node.ops[0] = SWAP_COMPARE[type(node.ops[0])]()
    elif isinstance(node, ast.BoolOp):
        node.op = SWAP_BOOL[type(node.op)]()
    elif isinstance(node, ast.UnaryOp):
        return node.operand
    elif isinstance(node, ast.Constant):
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    return node


def _candidates(tree: ast.AST, functions: tuple[str, ...] | None) -> list[tuple[ast.AST, str, str]]:
    skipped, owner = _skipped_nodes(tree), _functions(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped or not hasattr(node, "lineno"):
            continue
        function = owner.get(id(node), "")
        if functions is not None and function.split(".")[0] not in functions:
            continue
        description = _mutation(node)
        if description is not None:
            found.append((node, function, description))
    return found


def mutants_of(module: str) -> list[Mutant]:
    source = (ROOT / module).read_text()
    lines = source.splitlines()
    functions = TARGETS[module]
    return [Mutant(module, index, node.lineno, function, description, lines[node.lineno - 1].strip())
            for index, (node, function, description) in enumerate(_candidates(ast.parse(source), functions))]


def mutated_source(mutant: Mutant) -> str:
    tree = ast.parse((ROOT / mutant.module).read_text())
    node, _, _ = _candidates(tree, TARGETS[mutant.module])[mutant.index]
    replacement = _apply(node)
    if replacement is not node:  # a unary operator dropped: put its operand where it stood
        for parent in ast.walk(tree):
            for field, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, field, replacement)
                elif isinstance(value, list):
                    for i, item in enumerate(value):
                        if item is node:
                            value[i] = replacement
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


# ---- running tests in forked children ----------------------------------------------------------

def _preload() -> None:
    """The heavy imports, done once in the parent so that every forked child starts with them."""
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import accelerate  # noqa: F401
    import safetensors.torch  # noqa: F401
    import tokenizers  # noqa: F401


def _run_child(shadow: Path, arguments: list[str], basetemp: Path, timeout: float,
               plugin_factory=None, environment: dict[str, str] | None = None) -> tuple[str, float]:
    """('passed' | 'failed' | 'timeout' | 'error', seconds) of pytest run in a fork on the shadow package."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: import tartan from the shadow copy, run the tests, exit with pytest's code
        code = 3
        try:
            os.setsid()
            sys.path.insert(0, str(shadow))
            os.environ.update(environment or {})
            os.environ["PYTHONPATH"] = os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])
            # from the shadow folder, `python -m tartan` in a test's subprocess imports the mutant too
            os.chdir(shadow)
            import pytest

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            plugins = [plugin_factory()] if plugin_factory else []
            code = int(pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), "--basetemp",
                                    str(basetemp), *arguments], plugins=plugins))
        finally:
            os._exit(code)
    deadline = started + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started
        time.sleep(0.05)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    return {0: "passed", 1: "failed"}.get(code, "error"), seconds


def collect_coverage(shadow: Path, work: Path) -> dict:
    """Run every target's test files once under coverage, each test in its own coverage context:
    {"lines": {module: {line: [node ids]}}, "durations": {node id: seconds}, "failed": [node ids]}."""
    out = work / "coverage.json"
    if out.is_file():
        return json.loads(out.read_text())
    test_files = [f for f in TEST_FILES if (ROOT / f).exists()]
    data_file = work / ".coverage"
    result_file = work / "durations.json"
    # tests that run tartan in another process (torchrun, a killed and resumed run) are measured there
    # too: coverage starts in every Python process through a sitecustomize, in the context of the test
    # that launched it
    startup = work / "startup"
    startup.mkdir(exist_ok=True)
    (startup / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('COVERAGE_PROCESS_START'):\n    import coverage\n"
        # coverage's own .pth may have started it already: then process_startup() returns None
        "    measuring = coverage.process_startup() or getattr(coverage.process_startup, 'coverage', None)\n"
        "    if measuring is not None and os.environ.get('TARTAN_MUTATION_CONTEXT'):\n"
        "        measuring.switch_context(os.environ['TARTAN_MUTATION_CONTEXT'])\n")
    settings = work / "coveragerc"
    settings.write_text(f"[run]\ndata_file = {work / '.coverage.subprocess'}\nparallel = true\ninclude =\n"
                        + "".join(f"    {shadow / m}\n" for m in TARGETS))
    for stale in work.glob(".coverage.subprocess*"):
        stale.unlink()

    class Contexts:
        """Switches coverage's context to each test's node id and records its duration and outcome."""

        def __init__(self):
            import coverage

            self.coverage = coverage.Coverage(data_file=str(data_file), config_file=False,
                                              include=[str(shadow / m) for m in TARGETS])
            self.durations, self.failed = {}, []
            self.coverage.start()

        def pytest_runtest_setup(self, item):
            self.coverage.switch_context(item.nodeid)
            os.environ["TARTAN_MUTATION_CONTEXT"] = item.nodeid

        def pytest_runtest_logreport(self, report):
            self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
            if report.failed:
                self.failed.append(report.nodeid)

        def pytest_sessionfinish(self):
            self.coverage.stop()
            self.coverage.save()
            result_file.write_text(json.dumps({"durations": self.durations, "failed": self.failed}))

    print(f"coverage of {len(test_files)} test files ...", flush=True)
    outcome, seconds = _run_child(shadow, [str(ROOT / f) for f in test_files], work / "tmp-coverage", 3600, Contexts,
                                  {"COVERAGE_PROCESS_START": str(settings),
                                   "PYTHONPATH": os.pathsep.join([str(startup), os.environ.get("PYTHONPATH", "")])})
    print(f"  {outcome} in {seconds:.0f} s", flush=True)
    import coverage

    lines: dict[str, dict[str, set[str]]] = {module: {} for module in TARGETS}
    # lines that ran outside any test (at import: class attributes, module constants)
    imported: dict[str, set[str]] = {module: set() for module in TARGETS}
    for path in [data_file, *sorted(work.glob(".coverage.subprocess.*"))]:
        data = coverage.CoverageData(basename=str(path))
        data.read()
        for module in TARGETS:
            for line, names in data.contexts_by_lineno(str(shadow / module)).items():
                lines[module].setdefault(str(line), set()).update(c for c in names if c)
                if "" in names and path == data_file:
                    imported[module].add(str(line))
    recorded = json.loads(result_file.read_text())
    result = {"lines": {m: {line: sorted(tests) for line, tests in by_line.items()} for m, by_line in lines.items()},
              "imported": {m: sorted(found) for m, found in imported.items()}, **recorded}
    out.write_text(json.dumps(result))
    return result


def run(out: Path, only: list[str] | None, retry: bool = False) -> None:
    out = out.resolve()  # the tests run from the shadow folder
    out.mkdir(parents=True, exist_ok=True)
    modules = [m for m in TARGETS if not only or m in only]
    os.environ.setdefault("TARTAN_TEST_MODELS", str(out / "tiny_models"))
    shadow = Path(tempfile.mkdtemp(prefix="tartan-mutation-"))
    try:
        shutil.copytree(ROOT / "tartan", shadow / "tartan", ignore=shutil.ignore_patterns("__pycache__"))
        _preload()
        coverage = collect_coverage(shadow, out)
        failing = set(coverage["failed"])
        if failing:
            print(f"warning: {len(failing)} tests fail without any mutation and are left out: "
                  + ", ".join(sorted(failing)[:5]), flush=True)
        results_path = out / "results.jsonl"
        done = {}
        if results_path.is_file():
            for line in results_path.read_text().splitlines():
                record = json.loads(line)
                done[record["key"]] = record
        todo = []
        for module in modules:
            for mutant in mutants_of(module):
                record = done.get(mutant.key)
                if (record is None or record["source_line"] != mutant.source_line
                        or (retry and record["status"] == "survived")):
                    todo.append(mutant)
        print(f"{len(todo)} mutants to run ({len(done)} recorded)", flush=True)
        started = time.monotonic()
        with open(results_path, "a") as results:
            queue = list(todo)
            for number, mutant in enumerate(queue, 1):
                covering = coverage["lines"][mutant.module].get(str(mutant.line), [])
                if str(mutant.line) in coverage["imported"][mutant.module]:
                    # a value set at import time (a default, a constant): every test that runs the
                    # module may read it, though only those that import it in a subprocess ran its line
                    covering = sorted({t for tests in coverage["lines"][mutant.module].values() for t in tests})
                covering = [t for t in covering if t not in failing]
                covering.sort(key=lambda t: coverage["durations"].get(t, 1.0))
                if not covering:
                    status, seconds = "no tests", 0.0
                else:
                    target = shadow / mutant.module
                    original = target.read_text()
                    target.write_text(mutated_source(mutant))
                    try:
                        budget = 3 * sum(coverage["durations"].get(t, 1.0) for t in covering) + 30
                        status, seconds = _run_child(shadow, ["-x", *(str(ROOT / t) for t in covering)],
                                                     out / "tmp-mutant", budget)
                    finally:
                        target.write_text(original)
                record = {"key": mutant.key, "module": mutant.module, "line": mutant.line,
                          "function": mutant.function, "mutation": mutant.description,
                          "source_line": mutant.source_line, "status": _verdict(status),
                          "outcome": status, "tests": len(covering), "seconds": round(seconds, 2)}
                results.write(json.dumps(record) + "\n")
                results.flush()
                done[mutant.key] = record
                elapsed = time.monotonic() - started
                print(f"[{number}/{len(queue)} {elapsed / 60:.1f} min] {record['status']:8} {mutant.module}:"
                      f"{mutant.line} {mutant.description}  ({len(covering)} tests, {seconds:.1f} s)", flush=True)
        write_summary(out, modules, done)
    finally:
        shutil.rmtree(shadow, ignore_errors=True)


def _verdict(outcome: str) -> str:
    """A failing test, a crash of the run or a run past its time all notice the mutant."""
    return {"passed": "survived", "no tests": "survived"}.get(outcome, "killed")


def write_summary(out: Path, modules: list[str], done: dict) -> None:
    lines = ["| module | mutants | killed | survived | equivalent | score |", "|---|---|---|---|---|---|"]
    survivors = []
    totals = [0, 0, 0, 0]
    for module in modules:
        current = {m.key: m for m in mutants_of(module)}
        records = [r for k, r in done.items() if k in current]
        killed = sum(r["status"] == "killed" for r in records)
        alive = [r for r in records if r["status"] == "survived"]
        equivalent = [r for r in alive if (module, r["source_line"], r["mutation"]) in EQUIVALENT]
        for r in alive:
            reason = EQUIVALENT.get((module, r["source_line"], r["mutation"]))
            survivors.append(f"- `{module}:{r['line']}` ({r['function'] or 'module'}) `{r['source_line']}`: "
                             f"{r['mutation']}" + (f" ({r['outcome']})" if r["outcome"] == "no tests" else "")
                             + (f". Equivalent: {reason}" if reason else ""))
        score = killed / max(1, len(records) - len(equivalent))
        totals = [totals[0] + len(records), totals[1] + killed, totals[2] + len(alive), totals[3] + len(equivalent)]
        shown = f"{100 * score:.1f}%" if records else "-"  # nothing to mutate (only imports and classes)
        lines.append(f"| {module} | {len(records)} | {killed} | {len(alive)} | {len(equivalent)} | {shown} |")
    total, killed, alive, equivalent = totals
    lines.append(f"| all | {total} | {killed} | {alive} | {equivalent} | "
                 f"{100 * killed / max(1, total - equivalent):.1f}% |")
    text = ("Score: killed / (mutants - equivalent survivors); the survivors that are not equivalent are what "
            "the tests miss.\n\n" + "\n".join(lines)
            + "\n\n## Survivors\n" + ("\n".join(survivors) or "none") + "\n")
    (out / "summary.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mutation")
    parser.add_argument("--only", nargs="*", help="modules to mutate (default: all of TARGETS)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--summary", action="store_true", help="rewrite the summary from recorded results")
    parser.add_argument("--retry-survivors", action="store_true",
                        help="run the recorded survivors again (after adding tests; a killed mutant stays killed)")
    args = parser.parse_args()
    if args.list:
        for module in args.only or TARGETS:
            for mutant in mutants_of(module):
                print(f"{module}:{mutant.line} [{mutant.function}] {mutant.description}: {mutant.source_line}")
        return
    if args.summary:
        done = {}
        for line in (args.out / "results.jsonl").read_text().splitlines():
            record = json.loads(line)
            done[record["key"]] = record
        write_summary(args.out, [m for m in TARGETS if not args.only or m in args.only], done)
        return
    run(args.out, args.only, args.retry_survivors)


if __name__ == "__main__":
    main()
