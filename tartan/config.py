"""Typed run configuration: a YAML recipe plus dotted `key=value` overrides, validated against
dataclasses so that an unknown key or a value of the wrong type is one line naming it (and the recipe
line it came from)."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import TartanError

# auto: bf16 where the device computes it natively, else fp16 (loss-scaled) on a GPU, else fp32; a
# run records what auto resolved to
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# every task type's (tasks/*.py `metrics`): which fit the end task is checked once its type is known
METRICS = ("macro_f1", "micro_f1", "accuracy", "pearson", "spearman", "f1", "exact_match")


def checked(default, *, choices: tuple | None = None, minimum: float | None = None, below: float | None = None,
            above: float | None = None, maximum: float | None = None,
            pattern: str | None = None, spelled: str | None = None):
    """A config field whose value is checked where it is read (recipe line or override); `pattern`
    is a regular expression the whole value must match, `spelled` says what it accepts."""
    return field(default=default, metadata={"choices": choices, "minimum": minimum, "below": below,
                                            "above": above, "maximum": maximum,
                                            "pattern": pattern, "spelled": spelled})


@dataclass
class DataConfig:
    max_length: int = checked(256, minimum=1)
    # batches per length-sorted chunk: larger chunks pad less, smaller ones shuffle more
    bucket_batches: int = checked(50, minimum=1)
    # the share of the end task's train examples a run trains on (MUPPET's low-resource runs): a
    # random subset drawn by the run's seed, so that runs of one seed see the same examples
    train_fraction: float = checked(1.0, above=0, maximum=1)


@dataclass
class TaskConfig:
    # classification, regression, multiple_choice or span; unset: read from the task's first train row
    type: typing.Optional[str] = None


@dataclass
class TrainConfig:
    epochs: int = checked(10, minimum=1)
    # upper bound on optimizer steps in every stage of a method (for short runs)
    max_steps: typing.Optional[int] = checked(None, minimum=1)
    batch_size: int = checked(16, minimum=1)
    eval_batch_size: int = checked(64, minimum=1)
    lr_body: float = checked(1e-4, minimum=0)
    lr_head: float = checked(1e-3, minimum=0)
    weight_decay: float = checked(0.01, minimum=0)
    # fraction of the steps spent warming the learning rate up
    warmup: float = checked(0.06, minimum=0, below=1)
    grad_clip: float = checked(1.0, minimum=0)
    # micro-batches per optimizer step (gradient accumulation): a step sees accumulate x batch_size
    # examples of each task, as one batch that large would, in the memory of one micro-batch
    accumulate: int = checked(1, minimum=1)
    # what gradients are sent in between processes: fp32, or bf16 (half the bytes, summed in bf16)
    reduce_dtype: str = checked("fp32", choices=("fp32", "bf16"))
    # steps whose batches a background thread collates (and masks) ahead of the device; 0: none;
    # null: 2 on a GPU, none on a CPU (whose cores the step keeps busy: collating beside it slowed an
    # MT-TARTAN step by 9% on 2 cores)
    prefetch: typing.Optional[int] = checked(None, minimum=0)
    # evaluate every N optimizer steps; null evaluates once per epoch
    eval_every: typing.Optional[int] = checked(None, minimum=1)
    # evaluations without improvement before stopping; 0 never stops early
    patience: int = checked(3, minimum=0)
    precision: str = checked("auto", choices=PRECISIONS)
    head_dropout: float = checked(0.1, minimum=0, below=1)
    # the stage's first steps train its heads alone, the body frozen, so that new heads (a fresh
    # classifier, a masked-LM decoder made for a body that ships none) stop sending random gradients
    # into the body before it trains (LP-FT, Kumar et al. 2022); the body's learning-rate schedule
    # starts after them. Counted in the stage's steps (max_steps)
    head_warmup_steps: int = checked(0, minimum=0)
    log_every: int = checked(20, minimum=1)
    progress: bool = True
    # also save the resume checkpoint whenever this many minutes have passed since the last one, so
    # that a kill between evaluations of a long stage loses at most that much; null: at evaluations only
    checkpoint_minutes: typing.Optional[float] = checked(10.0, minimum=0)


@dataclass
class PretrainConfig(TrainConfig):
    """Masked-LM (continued pre-training) stages: their own budget, and their own seed so that runs
    that differ only in the fine-tuning seed share one pre-trained body."""

    epochs: int = checked(3, minimum=1)
    batch_size: int = checked(32, minimum=1)
    lr_body: float = checked(1e-4, minimum=0)
    patience: int = checked(0, minimum=0)
    seed: int = checked(0, minimum=0)


@dataclass
class MuppetConfig(TrainConfig):
    """MUPPET-style pre-finetuning (Aghajanyan et al. 2021): many labelled tasks at once, then the
    end task's fine-tuning. Its own budget and seed, so that runs differing only in the fine-tuning
    seed (or the end task) share one pre-finetuned body."""

    # labelled task folders of data_dir, each with its own head (dropped before fine-tuning)
    tasks: typing.List[str] = field(default_factory=list)
    epochs: int = checked(1, minimum=1)  # an epoch: every task's train set once, in batches
    patience: int = checked(2, minimum=0)
    # heterogeneous: each update sums batches of `tasks_per_update` tasks drawn by `sampling`;
    # batch_homogeneous: each update's batches all come from one drawn task; dataset_homogeneous:
    # one task's epoch after another
    batching: str = checked("heterogeneous", choices=("heterogeneous", "batch_homogeneous", "dataset_homogeneous"))
    tasks_per_update: int = checked(4, minimum=1)
    # natural: tasks drawn in proportion to their train sizes; uniform: equally often
    sampling: str = checked("natural", choices=("natural", "uniform"))
    # divide each task's loss by log(number of classes)
    scale_loss: bool = True
    # R3F: noise on the token embeddings, lambda x symmetric KL of clean and noisy predictions
    r3f: bool = False
    r3f_eps: float = checked(1e-5, minimum=0)
    r3f_noise: str = checked("uniform", choices=("uniform", "normal"))
    r3f_lambda: float = checked(1.0, minimum=0)
    seed: int = checked(0, minimum=0)


@dataclass
class MLMConfig:
    probability: float = checked(0.15, minimum=0, below=1)
    whole_word: bool = False
    # share of the unlabelled lines held out for MLM evaluation
    heldout: float = checked(0.05, minimum=0, below=1)


@dataclass
class DomainConfig:
    """In-domain text for DAPT: a .txt/.jsonl file (relative to data_dir or absolute)."""

    path: str = "citation_intent/domain.1x.txt"
    # all lines (null), a line count, or a multiple of the end task's train set such as 1x or 10x;
    # checked when read, not only by the methods that draw domain text (a typo in a sweep's grid)
    size: typing.Optional[str] = checked(None, pattern=r"\s*(all|\d+|\d+(\.\d+)?\s*x)\s*",
                                         spelled="a line count, all, or a multiple of the end task's train set such as 10x")


@dataclass
class MultitaskConfig:
    """The multi-task stage of MT-TARTAN and META-TARTAN."""

    # objectives trained beside the end task: `tapt` (masked-LM on the end task's train texts),
    # `dapt` (masked-LM on domain.path at domain.size), or the name of a labelled task folder
    auxiliary: typing.List[str] = field(default_factory=lambda: ["tapt", "dapt"])
    # batch size of every auxiliary task; null: train.batch_size
    auxiliary_batch_size: typing.Optional[int] = checked(None, minimum=1)
    # static weighting: task name -> weight before normalising to sum 1; a task not named weighs 1
    weights: typing.Dict[str, float] = field(default_factory=dict)
    # then fine-tune on the end task alone, kept only if it improves the dev metric
    final_finetune: bool = False
    # divide each labelled auxiliary task's loss by log(number of classes) (MUPPET's scaling)
    scale_loss: bool = False


@dataclass
class MetaConfig:
    """META-TARTAN's learned weights (defaults from the research)."""

    # learning rate of the weight logits (the research searched 1e-1, 5e-2, 3e-2, 1e-2)
    lr: float = checked(0.1, minimum=0)
    # separate: the dev gradient goes through a freshly trained meta head; same: through the end
    # task's own head (the ablation under which the end task's weight rails towards 1)
    head: str = checked("separate", choices=("separate", "same"))
    # update the weights every k steps; between updates the body mixes with the last weights
    update_every: int = checked(1, minimum=1)
    head_steps: int = checked(10, minimum=1)
    head_lr: float = checked(1e-3, minimum=0)
    head_weight_decay: float = checked(0.1, minimum=0)
    # end-task dev examples per weight update
    dev_batch_size: int = checked(16, minimum=1)
    # the end-task batch the meta head is fit on: the step's own train batch (its features come
    # free with the step's forward pass), another train batch (one extra forward pass without
    # gradients; the step's own biased the end task's cosine negative: benchmarks/meta_head_probe.py),
    # or a dev batch other than the one the dev gradient is taken on (the research code's dev head)
    head_batch: str = checked("step", choices=("step", "other", "dev"))
    # stop training the meta head once its loss changes by less than this between two of its steps
    # (the research code's convergence test); 0: always head_steps steps. Each check reads the loss
    # on the host, a synchronisation on a GPU
    head_tolerance: float = checked(0.0, minimum=0)


@dataclass
class Config:
    # recipe name (the file stem unless set): groups runs in reports
    name: str = ""
    method: str = "finetune"
    # a Hugging Face model name or local path; `minilm` is the embedded MiniLM-L6-H384
    model: str = "minilm"
    # numeric attributes of the model's Hugging Face config to override when loading it, such as
    # {attention_probs_dropout_prob: 0.0}: on CPU, attention dropout sends PyTorch's attention to its
    # slow unfused path
    model_config: typing.Dict[str, float] = field(default_factory=dict)
    # run the Python code a model ships in its folder or hub repo (Hugging Face's trust_remote_code):
    # only for models whose code you trust
    trust_remote_code: bool = False
    data_dir: typing.Optional[str] = None
    # where to compute: auto (CUDA where present, else the CPU), cpu, cuda, cuda:N. Not part of what
    # a run is: a run begun on one device resumes on another
    device: str = checked("auto", pattern=r"auto|cpu|cuda(:\d+)?", spelled="auto, cpu, cuda or cuda:N")
    end_task: str = "citation_intent"
    # dev metric that selects checkpoints; null takes the end task's customary one
    metric: typing.Optional[str] = checked(None, choices=METRICS)
    output_dir: typing.Optional[str] = None
    seed: int = checked(0, minimum=0)
    data: DataConfig = field(default_factory=DataConfig)
    # per labelled task, by folder name: tasks.stsb.type=regression
    tasks: typing.Dict[str, TaskConfig] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    muppet: MuppetConfig = field(default_factory=MuppetConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    multitask: MultitaskConfig = field(default_factory=MultitaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_data_dir() -> Path:
    if os.environ.get("TARTAN_DATA"):
        return Path(os.environ["TARTAN_DATA"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tartan" / "data"


def cache_dir() -> Path:
    if os.environ.get("TARTAN_CACHE"):
        return Path(os.environ["TARTAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tartan"


def load_config(recipe: str | Path | None, overrides: list[str] = ()) -> Config:
    """The recipe's values over the defaults, then each `key=value` override over those."""
    values: dict = {}
    lines: dict[str, int] = {}
    source = "defaults"
    if recipe is not None:
        source = str(recipe)
        values, lines = _read_yaml(Path(recipe))
    config = _build(Config, values, "", source, lines)
    for override in overrides:
        _apply_override(config, override)
    if not config.name:
        config.name = Path(recipe).stem if recipe is not None else config.method
    return config


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int, first: int):
        super().__init__(f"key {key!r} appears twice in one mapping (first at line {first}): YAML keeps the "
                         "later one whole, and the earlier settings would be lost")
        self.line = line


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: YAML itself
    keeps the last, so a second `train:` section silently drops every setting of the first."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden here
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in first:
                        raise DuplicateKey(key, key_node.start_mark.line + 1, first[key])
                    first[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: the base loader says so
                    break
        return super().construct_mapping(node, deep=deep)


def _decimal_int(loader: UniqueKeyLoader, node: yaml.ScalarNode):
    """YAML 1.1 reads `010` as octal 8 and `1:30` as 90 (base 60); a setting typed `010` means ten, as
    in YAML 1.2, and `1:30` stays text, so that an integer setting refuses it. 0x and 0b stay as prefixes."""
    text = loader.construct_scalar(node)
    digits = text.replace("_", "").lstrip("+-")
    if ":" in digits:
        return text
    if digits[:2].lower() in ("0x", "0b"):
        return loader.construct_yaml_int(node)
    return int(text.replace("_", ""), 10)


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _decimal_int)


def read_yaml(path: Path, what: str = "file"):
    """A YAML file's value (None when empty); a missing, non-UTF-8 or malformed file is a one-line
    error naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise TartanError(f"{what} not found", path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except UnicodeDecodeError:
        raise TartanError(f"{what} is not UTF-8 text", path) from None
    except OSError as error:
        raise TartanError(f"cannot read {what}: {error.strerror or error}", path) from None
    except DuplicateKey as error:
        raise TartanError(str(error), path, error.line) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise TartanError(f"malformed YAML: {problem}", path, mark.line + 1 if mark else None) from None


def _read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    values = read_yaml(path, "recipe")
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise TartanError("a recipe must be a mapping of keys to values", path, 1)
    lines: dict[str, int] = {}
    _key_lines(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), "", lines)
    return values, lines


def _key_lines(node: yaml.Node, prefix: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            dotted = f"{prefix}{key.value}"
            lines[dotted] = key.start_mark.line + 1
            _key_lines(value, dotted + ".", lines)


def _fields(cls) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls)}


def _build(cls, values: dict, prefix: str, source: str, lines: dict[str, int]):
    known = _fields(cls)
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise TartanError(f"unknown config key {dotted!r} (known here: {', '.join(known)})",
                              source, lines.get(dotted))
        hint, spec = known[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise TartanError(f"{dotted} must be a mapping of keys to values, got {value!r}",
                                  source, lines.get(dotted))
            kwargs[key] = _build(hint, value, dotted + ".", source, lines)
        elif (section := _named_sections(hint)) is not None:
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise TartanError(f"{dotted} must map names to sections ({dotted}.NAME.KEY), got {value!r}",
                                  source, lines.get(dotted))
            kwargs[key] = {str(name): _build(section, entry, f"{dotted}.{name}.", source, lines)
                           for name, entry in value.items()}
        else:
            kwargs[key] = _check(_coerce(value, hint, dotted, source, lines.get(dotted)), spec, dotted,
                                 source, lines.get(dotted))
    return cls(**kwargs)


def _named_sections(hint: Any):
    """The section class of a Dict[str, SECTION] field (`tasks`), else None."""
    if typing.get_origin(hint) is dict:
        value = typing.get_args(hint)[1]
        return value if dataclasses.is_dataclass(value) else None
    return None


def _base_type(hint: Any) -> Any:
    """int for Optional[int], and so on."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    return hint


def _coerce(value: Any, hint: Any, dotted: str, source: str, line: int | None) -> Any:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    if value is None or (optional and value in ("null", "None", "~")):
        if optional:
            return None
        raise TartanError(f"{dotted} must not be empty", source, line)
    if isinstance(value, dict) and any(v is None and ":" in str(k) for k, v in value.items()):
        # {tapt:1} is the key 'tapt:1' to YAML: a mapping wants a space after the colon
        key = next(str(k) for k, v in value.items() if v is None and ":" in str(k))
        raise TartanError(f"{dotted}: {key!r} reads as one key without a value; write "
                          f"'{key.replace(':', ': ', 1)}', with a space after the colon", source, line)
    if typing.get_origin(base) is list:
        if isinstance(value, str):  # an override: tapt,dapt
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise TartanError(f"{dotted} must be a list of names, got {value!r}", source, line)
        return list(value)
    if typing.get_origin(base) is dict:
        if not isinstance(value, dict):
            raise TartanError(f"{dotted} must be a mapping of names to numbers, got {value!r}", source, line)
        numbers = {}
        for key, number in value.items():
            numbers[str(key)] = _coerce(number, float, f"{dotted}.{key}", source, line)
            if numbers[str(key)] < 0:
                raise TartanError(f"{dotted}.{key} must be at least 0, got {number!r}", source, line)
        return numbers
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TartanError(f"{dotted} must be true or false, got {value!r}", source, line)
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TartanError(f"{dotted} must be an integer, got {value!r}", source, line)
    if base is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:  # YAML 1.1 reads 1e-4 as a string
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise TartanError(f"{dotted} must be a finite number, got {value!r}", source, line)
        return number
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise TartanError(f"{dotted} must be a string, got {value!r}", source, line)
    return value


def _apply_override(config: Config, override: str) -> None:
    source = f"override {override!r}"
    if "=" not in override:
        raise TartanError(f"{source}: expected key=value")
    dotted, raw = override.split("=", 1)
    dotted = dotted.strip()
    if not raw.strip():
        raise TartanError(f"{source}: no value after '='")
    try:
        value = yaml.load(raw, Loader=UniqueKeyLoader)
    except DuplicateKey as error:
        raise TartanError(f"{source}: {error}") from None
    except yaml.YAMLError:
        value = raw
    raw_text = raw
    target: Any = config
    parts = dotted.split(".")
    depth = 0
    while depth < len(parts):
        part = parts[depth]
        known = _fields(type(target))
        if part not in known:
            raise TartanError(f"{source}: unknown config key {'.'.join(parts[:depth + 1])!r} "
                              f"(known here: {', '.join(known)})")
        hint, spec = known[part]
        section = _named_sections(hint)
        if section is not None:  # tasks.NAME.KEY: the named section, made on first use
            if depth + 2 >= len(parts) or not parts[depth + 1]:
                raise TartanError(f"{source}: set {part}.NAME.KEY ({', '.join(_fields(section))})")
            target = getattr(target, part).setdefault(parts[depth + 1], section())
            depth += 2
            continue
        if depth < len(parts) - 1:
            if not dataclasses.is_dataclass(hint):
                raise TartanError(f"{source}: {'.'.join(parts[:depth + 1])} has no sub-keys")
            target = getattr(target, part)
        elif dataclasses.is_dataclass(hint):
            raise TartanError(f"{source}: {dotted} is a section; set one of its keys ({', '.join(_fields(hint))})")
        else:
            if _base_type(hint) is str and value is not None and raw_text.strip() not in ("null", "None", "~"):
                value = raw_text  # a name like 010 or 1.10 stays as typed, not as YAML reads it
            setattr(target, part, _check(_coerce(value, hint, dotted, source, None), spec, dotted, source, None))
        depth += 1


def _check(value: Any, spec: dataclasses.Field, dotted: str, source: str, line: int | None) -> Any:
    if value is None:
        return value
    rules = spec.metadata
    if rules.get("choices") and value not in rules["choices"]:
        raise TartanError(f"{dotted} must be one of {', '.join(rules['choices'])}, got {value!r}", source, line)
    if rules.get("pattern") and not re.fullmatch(rules["pattern"], str(value)):
        raise TartanError(f"{dotted} must be {rules['spelled']}, got {value!r}", source, line)
    if rules.get("minimum") is not None and value < rules["minimum"]:
        raise TartanError(f"{dotted} must be at least {rules['minimum']}, got {value!r}", source, line)
    if rules.get("below") is not None and value >= rules["below"]:
        raise TartanError(f"{dotted} must be below {rules['below']}, got {value!r}", source, line)
    if rules.get("above") is not None and value <= rules["above"]:
        raise TartanError(f"{dotted} must be above {rules['above']}, got {value!r}", source, line)
    if rules.get("maximum") is not None and value > rules["maximum"]:
        raise TartanError(f"{dotted} must be at most {rules['maximum']}, got {value!r}", source, line)
    return value


def with_defaults(saved: dict) -> dict:
    """A run's saved config with the keys it predates filled in at today's defaults. A key added to
    tartan later cannot have decided an older run, which trained as that key's default does (new
    settings default to the old behaviour); without this, every new key would make every earlier
    run directory look like another config."""
    def merge(defaults: dict, values: dict) -> dict:
        merged = dict(defaults)
        for key, value in values.items():
            merged[key] = merge(defaults[key], value) if isinstance(value, dict) and isinstance(
                defaults.get(key), dict) and defaults[key] else value
        return merged

    return merge(Config().to_dict(), saved)


def save_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
