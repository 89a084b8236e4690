"""Which runs a plot draws as one setting: seeds of equal configs together, same-named variants apart."""
from __future__ import annotations

import pytest
import yaml

from tartan.errors import TartanError
from tartan.plots import group_by_setting


def write_config(folder, **config):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_seeds_share_a_setting_and_same_named_variants_do_not(tmp_path):
    runs = {(batch, seed): write_config(tmp_path / f"{batch}{seed}", name="meta_tartan", end_task="toy", seed=seed,
                                        output_dir=str(tmp_path / f"{batch}{seed}"), meta={"head_batch": batch})
            for batch in ("step", "other") for seed in (0, 1)}
    groups = group_by_setting(list(runs.values()))
    assert groups == {"meta_tartan [meta.head_batch=step]": [runs["step", 0], runs["step", 1]],
                      "meta_tartan [meta.head_batch=other]": [runs["other", 0], runs["other", 1]]}


def test_an_axis_key_is_one_line_not_several(tmp_path):
    runs = [write_config(tmp_path / f"{size}{seed}", name="dapt", end_task="toy", seed=seed, domain={"size": size})
            for size in ("1x", "10x") for seed in (0, 1)]
    assert list(group_by_setting(runs, axis=("domain.size",))) == ["dapt"]
    assert sorted(group_by_setting(runs)) == ["dapt [domain.size=10x]", "dapt [domain.size=1x]"]


def test_one_name_over_several_end_tasks_is_refused(tmp_path):
    runs = [write_config(tmp_path / task, name="finetune", end_task=task) for task in ("a", "b")]
    with pytest.raises(TartanError, match="several end tasks"):
        group_by_setting(runs)


def test_pooled_keys_draw_seeds_of_another_precision_as_one_setting(tmp_path):
    # seed 0 trained where bf16 is native, seed 1 where it is not: one line with --pool precision
    runs = [write_config(tmp_path / f"{batch}{seed}", name="meta_tartan", end_task="toy", seed=seed,
                         meta={"head_batch": batch}, train={"precision": precision}, pretrain={"precision": precision})
            for batch in ("step", "other") for seed, precision in enumerate(["bf16", "fp32"])]
    # the legend says what a line mixes
    assert group_by_setting(runs, pool=("precision",)) == {
        "meta_tartan [meta.head_batch=step] (pooled: precision)": runs[:2],
        "meta_tartan [meta.head_batch=other] (pooled: precision)": runs[2:]}
    alike = [write_config(tmp_path / f"alike{seed}", name="finetune", end_task="toy", seed=seed,
                          train={"precision": "fp32"}) for seed in (0, 1)]
    assert group_by_setting(alike, pool=("precision",)) == {"finetune": alike}  # one value: nothing mixed
    assert len(group_by_setting(runs)) == 4  # unpooled, a precision is a setting of its own
    assert len(group_by_setting(runs, pool=("train.precision",))) == 4  # pretrain.precision still tells them apart
    with pytest.raises(TartanError, match="--pool 'precison' names no config key"):
        group_by_setting(runs, pool=("precison",))


def test_a_seed_twice_at_one_point_is_refused_as_the_report_refuses_it(tmp_path):
    runs = [write_config(tmp_path / f"{lr}{seed}", name="finetune", end_task="toy", seed=seed, train={"lr_body": lr})
            for lr in (1e-4, 2e-4) for seed in (0, 1)]
    with pytest.raises(TartanError, match="seed 0 twice in one line"):
        group_by_setting(runs, pool=("train.lr_body",))
    assert len(group_by_setting(runs, axis=("train.lr_body",))["finetune"]) == 4  # an axis: other points
