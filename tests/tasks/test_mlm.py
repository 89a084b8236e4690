import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tartan.config import load_config
from tartan.data.masking import IGNORE
from tartan.errors import TartanError
from tartan.models.multitask import MultiTaskModel
from tartan.tasks.mlm import MaskedLMTask


HELD_OUT_OF_40_AT_SEED_0 = [1, 4, 6, 7, 9, 18, 27, 31, 33, 34]


def config_for(model, data_dir, *extra):
    return load_config(None, [f"model={model}", f"data_dir={data_dir}", "end_task=toy", "data.max_length=32", *extra])


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_gathered_loss_equals_full_logits_loss_on_the_same_masks(kind, tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[kind])
    task = MaskedLMTask.from_config("tapt", config_for(tiny_models[kind], data_dir), tokenizer, source="task")
    body = AutoModel.from_pretrained(tiny_models[kind])
    model = MultiTaskModel(body, {"tapt": task.make_head(body)}).eval()
    indices = task.train_batches(0)[0]
    gathered = task.collate("train", indices, draw=5)
    full = task.collate("train", indices, draw=5, full_logits=True)
    assert torch.equal(gathered["input_ids"], full["input_ids"])
    selected = int((full["mlm_full_labels"] != IGNORE).sum())
    assert selected > 0 and torch.equal(gathered["mlm_labels"], full["mlm_full_labels"])
    with torch.no_grad():
        gathered_output = model("tapt", gathered)
        full_output = model("tapt", full)
    assert gathered_output.shape == (selected, len(tokenizer))
    assert full_output.shape[:2] == full["input_ids"].shape
    assert torch.allclose(task.loss(gathered_output, gathered), task.loss(full_output, full), atol=1e-5)


def test_masks_are_drawn_afresh_for_every_draw(tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    task = MaskedLMTask.from_config("tapt", config_for(tiny_models["bert"], data_dir), tokenizer, source="task")
    indices = task.train_batches(0)[0]
    a, b, a_again = (task.collate("train", indices, draw=d)["input_ids"] for d in (1, 2, 1))
    assert not torch.equal(a, b) and torch.equal(a, a_again)


def test_sources_sizes_and_heldout(tiny_models, data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    domain = tmp_path / "domain.txt"
    domain.write_text("".join(f"domain line {i} about citation words\n" for i in range(200)) + "\n\n")
    config = config_for(tiny_models["bert"], data_dir)
    whole = MaskedLMTask.from_config("dapt", config, tokenizer, path=str(domain))
    assert whole.num_texts == 200  # blank lines are not passages
    assert len(whole.rows["dev"]) == 10 and len(whole.rows["train"]) == 190
    twice = MaskedLMTask.from_config("dapt", config, tokenizer, path=str(domain), size="2x")
    assert twice.num_texts == 2 * 48  # the toy task has 48 train examples
    counted = MaskedLMTask.from_config("dapt", config, tokenizer, path=str(domain), size=30)
    assert counted.num_texts == 30
    again = MaskedLMTask.from_config("dapt", config, tokenizer, path=str(domain), size=30)
    assert [list(x) for x in counted.encoded.input_ids] == [list(x) for x in again.encoded.input_ids]
    # the digest (which keys a stored pre-training stage) tells samples apart; the whole file is the file's
    from tartan.data.labelled import file_digest

    other_seed = MaskedLMTask.from_config("dapt", config_for(tiny_models["bert"], data_dir, "pretrain.seed=1"),
                                          tokenizer, path=str(domain), size=30)
    assert whole.digest == file_digest(domain)
    assert len({whole.digest, counted.digest, twice.digest, other_seed.digest}) == 4
    assert counted.digest == again.digest
    with pytest.raises(TartanError, match="asked for 4800 lines but the file has only 200"):
        MaskedLMTask.from_config("dapt", config, tokenizer, path=str(domain), size="100x")


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_or_blank_text_file_is_one_clear_error(content, tiny_models, data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    domain = tmp_path / "domain.txt"
    domain.write_text(content)
    with pytest.raises(TartanError, match="empty or has only blank lines") as error:
        MaskedLMTask.from_config("dapt", config_for(tiny_models["bert"], data_dir), tokenizer, path=str(domain))
    assert error.value.path == str(domain)


def test_missing_text_file_names_it(tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    with pytest.raises(TartanError, match="file not found") as error:
        MaskedLMTask.from_config("dapt", config_for(tiny_models["bert"], data_dir), tokenizer, path="nope/domain.txt")
    assert error.value.path.endswith("nope/domain.txt")


def test_heldout_evaluation_reports_loss_perplexity_and_accuracy(tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    task = MaskedLMTask.from_config("tapt", config_for(tiny_models["bert"], data_dir, "mlm.heldout=0.25"), tokenizer,
                                    source="task")
    body = AutoModel.from_pretrained(tiny_models["bert"])
    model = MultiTaskModel(body, {"tapt": task.make_head(body)})
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    first = task.evaluate(model, "dev", no_autocast)
    assert set(first) == {"loss", "perplexity", "accuracy"}
    assert np.isclose(first["perplexity"], np.exp(first["loss"]))
    assert task.evaluate(model, "dev", no_autocast) == first  # fixed held-out masks


def test_masks_are_the_same_in_every_process(tiny_models, data_dir):
    """Resume, several processes and reused stages all need masks that do not depend on the process
    (Python salts the hash of strings per process)."""
    import os
    import subprocess
    import sys

    script = f"""
import torch
from transformers import AutoTokenizer
from tartan.config import load_config
from tartan.tasks.mlm import MaskedLMTask
config = load_config(None, ["model={tiny_models['bert']}", "data_dir={data_dir}", "end_task=toy", "data.max_length=32"])
task = MaskedLMTask.from_config("tapt", config, AutoTokenizer.from_pretrained("{tiny_models['bert']}"), source="task")
print(task.collate("train", task.train_batches(0)[0], draw=3)["input_ids"].tolist())
"""
    outputs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              env=dict(os.environ, PYTHONHASHSEED=str(salt))).stdout for salt in (1, 2)}
    assert len(outputs) == 1


@pytest.mark.parametrize("whole_word", [False, True])
def test_a_row_is_masked_alike_whichever_rows_it_is_collated_with(whole_word, tiny_models, data_dir):
    """Each process collates only its rows of a global batch: their masks, and the global batch's
    loss units counted without collating it, must be what one process collating all of it draws."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    config = config_for(tiny_models["bert"], data_dir, f"mlm.whole_word={str(whole_word).lower()}")
    task = MaskedLMTask.from_config("tapt", config, tokenizer, source="task")
    indices = task.train_batches(0)[0]
    whole = task.collate("train", indices, draw=4)
    for part in (indices[:3], indices[3:]):
        rows = task.collate("train", part, draw=4, batch_of=indices)
        at = [list(indices).index(i) for i in part]
        width = rows["input_ids"].shape[1]  # padded to its own longest row only
        assert width == max(len(task.encoded.input_ids[i]) for i in part) <= whole["input_ids"].shape[1]
        assert torch.equal(rows["input_ids"], whole["input_ids"][at, :width])
        assert torch.equal(rows["mlm_labels"], whole["mlm_labels"][at, :width])
    assert task.global_loss_units("train", indices, draw=4) == task.loss_units(whole) > 0


def test_a_global_batch_that_draws_no_mask_scores_one_token_in_the_process_holding_it(tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    task = MaskedLMTask.from_config("tapt", config_for(tiny_models["bert"], data_dir), tokenizer, source="task")
    task.probability = 1e-12  # nothing is drawn
    indices = task.train_batches(0)[0]
    first, rest = (task.collate("train", part, draw=0, batch_of=indices) for part in (indices[:2], indices[2:]))
    assert task.loss_units(first) == 1 and task.loss_units(rest) == 0
    assert task.global_loss_units("train", indices) == 1 == task.loss_units(task.collate("train", indices))
    # the first maskable token of the first row, as one process scores it
    assert torch.equal(first["mlm_labels"], task.collate("train", indices)["mlm_labels"][:2, :first["mlm_labels"].shape[1]])


def test_without_heldout_lines_a_stage_keeps_its_last_weights(tiny_models, data_dir, tmp_path):
    from pathlib import Path

    from tartan.run import train
    from conftest import tiny_overrides

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tapt.yaml"
    overrides = tiny_overrides(tiny_models["bert"], data_dir, tmp_path / "run", **{
        "mlm.heldout": 0, "pretrain.batch_size": 8, "pretrain.epochs": 2, "pretrain.precision": "fp32",
        "train.max_steps": 2})
    metrics = train(load_config(recipe, overrides))
    assert metrics["stages"]["tapt"]["best_step"] == metrics["stages"]["tapt"]["steps"] == 2


def mlm_task(tiny_models, data_dir, **options) -> MaskedLMTask:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    texts = [f"{w} extends motivation citation {w}" for w in ("background", "baseline", "contrast")] * 8
    return MaskedLMTask("tapt", texts, "digest", tokenizer, max_length=32, batch_size=8, eval_batch_size=8, seed=0,
                        heldout=0.0, **options)


def test_collate_never_selects_special_or_padding_tokens(tiny_models, data_dir):
    # probability 1: every token that may be masked is, so a maskable [CLS] or [SEP] would show
    task = mlm_task(tiny_models, data_dir, probability=1.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    indices = np.arange(len(task.encoded))
    batch = task.collate("train", indices, draw=0)
    plain = task.collate("train", indices, draw=0)  # the same draw: the same masks
    assert torch.equal(batch["input_ids"], plain["input_ids"])
    original = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(ids) for ids in task.encoded.input_ids],
                                               batch_first=True, padding_value=tokenizer.pad_token_id)
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids)) | (batch["attention_mask"] == 0)
    selected = batch["mlm_labels"] != IGNORE
    assert special.any() and (batch["attention_mask"] == 0).any()  # the batch has specials and padding
    assert torch.equal(selected, ~special)
    assert torch.equal(batch["mlm_labels"][selected], original[selected])
    assert torch.equal(batch["input_ids"][special], original[special])


def test_whole_word_masking_selects_every_piece_of_a_chosen_word_in_collate(tiny_models, data_dir):
    def partly_selected_words(task) -> int:
        partial = 0
        for draw in range(20):
            labels = task.collate("train", np.arange(len(task.encoded)), draw=draw)["mlm_labels"]
            for row, words in enumerate(task.encoded.word_ids):
                selected = (labels[row, :len(words)] != IGNORE).numpy()
                for word in set(words.tolist()) - {-1}:
                    partial += 0 < selected[words == word].sum() < (words == word).sum()
        return partial

    whole = mlm_task(tiny_models, data_dir, whole_word=True, probability=0.3)
    pieces = [len(ids) - 2 for ids in whole.encoded.input_ids]
    words = [len(set(w.tolist()) - {-1}) for w in whole.encoded.word_ids]
    assert any(p > w for p, w in zip(pieces, words))  # some word is split into several tokens
    assert partly_selected_words(whole) == 0
    per_token = mlm_task(tiny_models, data_dir, whole_word=True, probability=0.3)
    per_token.whole_word = False  # the same word ids, selected token by token
    assert partly_selected_words(per_token) > 0


def test_heldout_evaluation_is_the_mean_loss_and_accuracy_over_every_masked_token(tiny_models, data_dir):
    import torch.nn.functional as F

    from tartan.data.batching import sorted_batches
    from tartan.tasks.mlm import HELDOUT_SEED

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    task = MaskedLMTask.from_config("tapt", config_for(tiny_models["bert"], data_dir, "mlm.heldout=0.25"), tokenizer,
                                    source="task")
    task.eval_batch_size = 3  # several batches: the figures are over tokens, not a mean of batch means
    body = AutoModel.from_pretrained(tiny_models["bert"])
    model = MultiTaskModel(body, {"tapt": task.make_head(body)}).eval()
    rows = task.rows["dev"]
    losses, hits = [], []
    with torch.no_grad():
        for k, b in enumerate(sorted_batches(task.lengths[rows], 3)):
            batch = task.collate("heldout", rows[b], draw=HELDOUT_SEED + k)
            targets = batch["mlm_labels"][batch["mlm_labels"] != IGNORE]
            logits = model("tapt", batch).float()
            losses += F.cross_entropy(logits, targets, reduction="none").tolist()
            hits += (logits.argmax(-1) == targets).tolist()
    assert k >= 3 and len({len(x) for x in (losses, hits)}) == 1
    figures = task.evaluate(model, "dev", lambda: torch.autocast("cpu", enabled=False))
    assert figures["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert figures["perplexity"] == pytest.approx(np.exp(np.mean(losses)), rel=1e-5)
    assert figures["accuracy"] == pytest.approx(np.mean(hits))
    # a tiny random model guesses some tokens and not others: an inverted count would show
    model.heads["tapt"].bias.data[targets[0]] += 100.0
    assert 0 < task.evaluate(model, "dev", lambda: torch.autocast("cpu", enabled=False))["accuracy"] < 1


def test_loss_units_are_the_masked_tokens(tiny_models, data_dir):
    task = mlm_task(tiny_models, data_dir, probability=0.5)
    indices = np.arange(6)
    gathered = task.collate("train", indices, draw=2)
    full = task.collate("train", indices, draw=2, full_logits=True)
    selected = int((gathered["mlm_labels"] != IGNORE).sum())
    assert 0 < selected < int(gathered["attention_mask"].sum())
    assert task.loss_units(gathered) == task.loss_units(full) == selected


def test_a_batch_that_draws_no_mask_scores_its_first_maskable_token(tiny_models, data_dir):
    task = mlm_task(tiny_models, data_dir, probability=1e-12)
    batch = task.collate("train", np.arange(2), draw=0)
    selected = (batch["mlm_labels"] != IGNORE).nonzero().tolist()
    assert selected == [[0, 1]]  # row 0, the token after [CLS]
    assert batch["input_ids"][0, 1] == task.mask_id
    assert batch["mlm_labels"][0, 1] == task.encoded.input_ids[0][1]


def test_a_batch_with_nothing_to_mask_has_a_zero_loss_that_still_backpropagates(tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    task = MaskedLMTask("tapt", ["", ""], "digest", tokenizer, max_length=32, batch_size=2, eval_batch_size=2, seed=0,
                        heldout=0.0)
    batch = task.collate("train", np.arange(2), draw=0)
    assert not (batch["mlm_labels"] != IGNORE).any()  # [CLS] [SEP] only
    output = torch.randn(0, 7, requires_grad=True)
    loss = task.loss(output, batch)
    assert loss.item() == 0.0 and task.loss_units(batch) == 0
    loss.backward()
    assert output.grad is not None


@pytest.mark.parametrize("lines, heldout, expected", [(20, 0.001, 1), (3, 0.9, 2), (40, 0.25, 10), (20, 0.0, 0)])
def test_held_out_lines_are_a_share_but_at_least_one_and_never_all(lines, heldout, expected, tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    task = MaskedLMTask("tapt", [f"line {i} of text" for i in range(lines)], "digest", tokenizer, max_length=32,
                        batch_size=2, eval_batch_size=2, seed=0, heldout=heldout)
    assert len(task.rows["dev"]) == expected and len(task.rows["train"]) == lines - expected
    assert task.splits == (["train", "dev"] if expected else ["train"])
    assert sorted(task.rows["dev"].tolist() + task.rows["train"].tolist()) == list(range(lines))


def test_which_lines_are_held_out_follows_the_data_seed_only(tiny_models, data_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    texts = [f"line {i} of text" for i in range(40)]
    make = lambda seed, data_seed: MaskedLMTask("t", texts, "d", tokenizer, max_length=32, batch_size=2,  # noqa: E731
                                                eval_batch_size=2, seed=seed, data_seed=data_seed, heldout=0.25)
    assert make(0, 5).rows["dev"].tolist() == make(1, 5).rows["dev"].tolist() != make(0, 6).rows["dev"].tolist()
    assert make(3, None).rows["dev"].tolist() == make(0, 3).rows["dev"].tolist()  # no data seed: the seed
    # pinned: a run's held-out lines are part of its published figures
    assert make(0, 0).rows["dev"].tolist() == HELD_OUT_OF_40_AT_SEED_0


def test_stable_seeds_are_pinned():
    """Masks and meta heads are seeded from these: a change alters every resumed or reused run."""
    from tartan.tasks.mlm import stable_seed

    assert stable_seed("x", 3, "train") == 2066018931302452020
    assert stable_seed(0, 5, "heldout") == 4932902231666125889
    assert all(0 <= stable_seed(i, "meta head") < 2 ** 63 for i in range(200))


def test_only_masked_lm_data_depends_on_the_end_task(tiny_models, data_dir):
    # a sweep tells shared pre-training stages apart by this: a classification task's data is its own folder
    from helpers import build_multitask

    _, classification, _ = build_multitask(tiny_models["bert"], data_dir)
    assert mlm_task(tiny_models, data_dir).reads_end_task is True
    assert classification.reads_end_task is False


def test_random_replacements_come_from_the_whole_vocabulary(tiny_models, data_dir):
    task = mlm_task(tiny_models, data_dir, probability=1.0)
    body = AutoModel.from_pretrained(tiny_models["bert"])
    task.make_head(body)  # sizes the replacements to the embedding rows
    assert task.vocab_size == body.get_input_embeddings().weight.shape[0] > body.config.hidden_size
    indices = np.arange(len(task.encoded))
    replaced = []
    for draw in range(30):
        batch = task.collate("train", indices, draw=draw)
        selected = batch["mlm_labels"] != IGNORE
        swapped = selected & (batch["input_ids"] != task.mask_id) & (batch["input_ids"] != batch["mlm_labels"])
        replaced += batch["input_ids"][swapped].tolist()
    assert max(replaced) > body.config.hidden_size and max(replaced) < task.vocab_size


def test_a_single_held_out_token_is_scored_alone_and_perplexity_is_capped(tiny_models, data_dir):
    import torch.nn.functional as F

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    # one word a line, one line held out: one masked token in all
    task = MaskedLMTask("tapt", ["zeta", "kappa"], "d", tokenizer, max_length=32, batch_size=2, eval_batch_size=2,
                        seed=0, heldout=0.5)
    body = AutoModel.from_pretrained(tiny_models["bert"])
    model = MultiTaskModel(body, {"tapt": task.make_head(body)}).eval()
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    from tartan.tasks.mlm import HELDOUT_SEED

    batch = task.collate("heldout", task.rows["dev"], draw=HELDOUT_SEED)
    target = batch["mlm_labels"][batch["mlm_labels"] != IGNORE]
    assert len(target) == 1
    with torch.no_grad():
        logits = model("tapt", batch).float()
    figures = task.evaluate(model, "dev", no_autocast)
    assert figures["loss"] == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-5)
    assert figures["accuracy"] == float(logits.argmax(-1) == target)
    with torch.no_grad():  # the target far likelier than any other token: one right of one
        model.heads["tapt"].bias[target] = 500.0
    assert task.evaluate(model, "dev", no_autocast)["accuracy"] == 1.0
    with torch.no_grad():  # every other token far likelier: a loss of hundreds of nats
        model.heads["tapt"].bias.fill_(500.0)
        model.heads["tapt"].bias[target] = -500.0
    figures = task.evaluate(model, "dev", no_autocast)
    assert figures["loss"] > 100 and figures["perplexity"] == pytest.approx(np.exp(50.0))
