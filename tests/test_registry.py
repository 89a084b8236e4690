"""tartan.registry: the one name -> entry registry behind every extension point."""
from __future__ import annotations

import pytest

from tartan.errors import TartanError
from tartan.registry import Registry


def test_register_get_names_and_contains():
    widgets = Registry("widget")
    assert widgets.names() == [] and "a" not in widgets

    @widgets.register("b")
    class B:
        pass

    def make_a():
        return "a"

    assert widgets.register("a")(make_a) is make_a  # the decorator hands the entry back unchanged
    assert widgets.get("a") is make_a and widgets.get("b") is B
    assert widgets.names() == ["a", "b"]  # sorted, whatever the order of registration
    assert "a" in widgets and "c" not in widgets


def test_a_name_registered_twice_is_refused():
    widgets = Registry("widget")
    widgets.register("a")(object)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        widgets.register("a")(int)
    assert widgets.get("a") is object  # the first entry stands


def test_an_unknown_name_is_one_line_listing_the_known_ones():
    widgets = Registry("widget")
    for name in ("zeta", "alpha"):
        widgets.register(name)(object)
    with pytest.raises(TartanError) as caught:
        widgets.get("alpah")
    assert str(caught.value) == "unknown widget 'alpah' (known: alpha, zeta)"
    assert caught.value.path is None


def test_the_registries_hold_the_documented_entries():
    from tartan.data.readers import readers
    from tartan.methods import methods
    from tartan.plots import plots
    from tartan.tasks import task_types
    from tartan.training.sampling import schemes
    from tartan.weighting import strategies

    assert set(task_types.names()) >= {"classification", "mlm"}
    assert set(strategies.names()) >= {"static", "meta", "sum"}
    assert set(methods.names()) >= {"finetune", "tapt", "dapt", "dapt_tapt", "mt_tartan", "meta_tartan", "muppet"}
    assert set(plots.names()) >= {"weights", "curves", "efficiency"}
    assert set(readers.names()) >= {"jsonl", "csv", "tsv", "txt"}
    assert set(schemes.names()) >= {"heterogeneous", "batch_homogeneous", "dataset_homogeneous"}
