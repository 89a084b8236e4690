"""Helpers the tests share: the toy data, tiny random encoders with tokenizers trained on the spot,
recipe paths, JSON-lines files and the overrides of a tiny run. Fixtures are in conftest.py."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch

WORDS = ("the model learns citation intent from text while auxiliary data helps with domain words "
         "background uses extends future motivation compare contrast results method baseline").split()
LABELS = ["Background", "Uses", "Extends"]
MARKERS = {"Background": "zeta", "Uses": "kappa", "Extends": "omega"}  # never among WORDS: the label is learnable
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def recipe(name: str) -> Path:
    return RECIPES / f"{name}.yaml"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list) -> None:
    """Rows as JSON lines; a string row is written as it is (a blank or malformed line)."""
    Path(path).write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))




def make_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20))) for _ in range(count)]


def write_task(folder: Path, sizes=(48, 16, 16), seed: int = 0, pairs: bool = False) -> Path:
    """A labelled task folder whose label is learnable from its marker word."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, size in zip(("train", "dev", "test"), sizes):
        rows = []
        for i, text in enumerate(make_texts(size, seed=seed * 100 + len(split))):
            label = LABELS[i % len(LABELS)]
            row = {"text": f"{MARKERS[label]} {text}", "label": label}
            if pairs:
                row["text_pair"] = " ".join(rng.choice(WORDS) for _ in range(5))
            rows.append(row)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _train_tokenizer(kind: str, folder: Path):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = make_texts(200) + list(MARKERS.values()) * 5
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        tokenizer.decoder = decoders.WordPiece()
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        tokenizer.decoder = decoders.ByteLevel()
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                                       mask_token="<mask>")
    fast.save_pretrained(folder)
    return fast


def make_tiny_model(kind: str, folder: Path) -> Path:
    """Save a tiny random `kind` model (bert, roberta, distilbert, or one of MORE_FAMILIES) with its
    tokenizer to `folder`."""
    import transformers as T

    torch.manual_seed(0)
    roberta_like = kind in ("roberta", "xlm-roberta", "mpnet", "modernbert")
    tokenizer = _train_tokenizer("bpe" if roberta_like else "wordpiece", folder)
    size = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=64, max_position_embeddings=80)
    if roberta_like:
        size.update(bos_token_id=0, eos_token_id=2)
    if kind in ("roberta", "xlm-roberta", "mpnet"):
        size["max_position_embeddings"] += 2  # RoBERTa's positions start after the padding index
    builders = {
        "bert": lambda: T.BertModel(T.BertConfig(**size)),
        "roberta": lambda: T.RobertaModel(T.RobertaConfig(**size)),
        "distilbert": lambda: T.DistilBertModel(T.DistilBertConfig(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, dim=32, n_layers=2, n_heads=2,
            hidden_dim=64, max_position_embeddings=80)),
        # ALBERT and ELECTRA(-small) embed tokens narrower than their hidden states
        "albert": lambda: T.AlbertModel(T.AlbertConfig(embedding_size=16, **size)),
        "electra": lambda: T.ElectraModel(T.ElectraConfig(embedding_size=16, **size)),
        "deberta": lambda: T.DebertaModel(T.DebertaConfig(**size)),
        "deberta-v2": lambda: T.DebertaV2Model(T.DebertaV2Config(**size)),
        "xlm-roberta": lambda: T.XLMRobertaModel(T.XLMRobertaConfig(**size)),
        "mpnet": lambda: T.MPNetModel(T.MPNetConfig(**size)),
        "modernbert": lambda: T.ModernBertModel(T.ModernBertConfig(cls_token_id=0, sep_token_id=2, local_attention=16,
                                                                   global_attn_every_n_layers=1, **size)),
    }
    builders[kind]().save_pretrained(folder)
    return folder


MORE_FAMILIES = ("albert", "electra", "deberta-v2", "xlm-roberta", "mpnet", "modernbert")


def custom_code_model(tiny_models: dict, folder: Path) -> Path:
    """The tiny BERT as a model that ships its own code (a config and model class of its own, named
    in config.json's auto_map), as hub models such as NomicBERT do."""
    shutil.copytree(tiny_models["bert"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tiny-custom", architectures=["TinyModel"],
                  auto_map={"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_tiny.py").write_text(
        "from transformers import BertConfig\n\n\nclass TinyConfig(BertConfig):\n    model_type = 'tiny-custom'\n")
    (folder / "modeling_tiny.py").write_text(
        "from transformers import BertModel\n\nfrom .configuration_tiny import TinyConfig\n\n\n"
        "class TinyModel(BertModel):\n    config_class = TinyConfig\n")
    return folder


def tiny_overrides(model: Path, data_dir: Path, output_dir: Path, **extra) -> list[str]:
    values = {"model": str(model), "data_dir": str(data_dir), "end_task": "toy", "output_dir": str(output_dir),
              "train.batch_size": 8, "train.epochs": 2, "train.precision": "fp32", "train.progress": "false",
              "train.log_every": 2, "data.max_length": 32, "train.lr_body": 1e-3}
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


class ScriptedDev:
    """Stands in for the stage's evaluation: the k-th evaluation of a stage scores curves[stage][k],
    and the model's weights at each evaluation are kept, so that a test can tell which were restored."""

    def __init__(self, curves: dict[str, list[float]], fail_at: dict[str, int] | None = None):
        self.curves, self.fail_at = curves, fail_at or {}
        self.calls: dict[str, int] = {}
        self.weights: dict[str, list[dict[str, torch.Tensor]]] = {}

    def install(self, monkeypatch) -> "ScriptedDev":
        import tartan.training.loop as loop

        monkeypatch.setattr(loop, "evaluate_stage", self)
        return self

    def __call__(self, stage, tasks, model, accelerator):
        k = self.calls.get(stage.name, 0)
        if self.fail_at.get(stage.name) == k:
            raise Interrupted(f"killed before evaluation {k}")
        self.calls[stage.name] = k + 1
        self.weights.setdefault(stage.name, []).append({n: p.detach().clone() for n, p in model.state_dict().items()})
        value = self.curves[stage.name][k]
        return {"macro_f1": value}, value


class Interrupted(Exception):
    """A kill, as ScriptedDev stages it."""


def same_weights(model, weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, weights[n]) for n, p in model.state_dict().items())


def build_multitask(model_path: Path, data_dir: Path, heads: tuple[str, ...] = ("toy",), dropout: bool = False,
                    batch_size: int = 8):
    """(config, the toy classification task, a tiny body with a fresh toy head per name in `heads`),
    as training builds them. Without dropout a gradient is a function of the batch alone."""
    from tartan.config import load_config
    from tartan.models.body import load_body
    from tartan.models.multitask import MultiTaskModel
    from tartan.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    config = load_config(None, [f"model={model_path}", f"data_dir={data_dir}", "end_task=toy", f"train.batch_size={batch_size}",
                                "data.max_length=32", "train.progress=false",
                                f"train.head_dropout={0.1 if dropout else 0}"])
    no_dropout = None if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    body, tokenizer = load_body(str(model_path), config_overrides=no_dropout)
    task = ClassificationTask.from_config("toy", config, tokenizer)
    return config, task, MultiTaskModel(body, {name: task.make_head(body) for name in heads})


def doubling_all_reduce(record):
    """A stand-in for torch.distributed.all_reduce as two processes holding the same tensor would
    see it (the sum is twice the tensor), recording each call's tensor through `record`; finished
    at once, asynchronous or not."""
    class Done:
        def wait(self) -> None:
            pass

    def all_reduce(tensor, op=None, async_op=False):
        record(tensor)
        tensor.mul_(2)
        return Done() if async_op else None

    return all_reduce


def write_choices(folder: Path, sizes=(48, 16, 16), seed: int = 0, choices: int = 3, question: bool = False) -> Path:
    """Rows whose right choice repeats the context's first word (learnable)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, size in zip(("train", "dev", "test"), sizes):
        rows = []
        for text in make_texts(size, seed=seed * 100 + len(split)):
            words = text.split()
            label = rng.randrange(choices)
            options = [" ".join(rng.sample(words, min(2, len(words)))) + " zeta" for _ in range(choices)]
            options[label] = f"{words[0]} {words[0]}"
            row = {"context": text, "choices": options, "label": label}
            if question:
                row["question"] = rng.choice(["cause", "effect"])
            rows.append(row)
        write_jsonl(folder / f"{split}.jsonl", rows)
    return folder


def write_questions(folder: Path, sizes=(48, 16, 16), seed: int = 0) -> Path:
    """Extractive QA rows in SQuAD's layout whose answer follows the word 'zeta' in the context."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, size in zip(("train", "dev", "test"), sizes):
        rows = []
        for i, text in enumerate(make_texts(size, seed=seed * 100 + len(split))):
            answer = rng.choice(WORDS)
            context = f"{text} zeta {answer} {' '.join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))}"
            rows.append({"id": f"{split}{i}", "question": "what follows zeta?", "context": context,
                         "answers": {"text": [answer], "answer_start": [len(text) + 6]}})
        write_jsonl(folder / f"{split}.jsonl", rows)
    return folder
