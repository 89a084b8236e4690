import pytest

from tartan.config import load_config
from tartan.methods import methods

from helpers import RECIPES as RECIPE_FOLDER

RECIPES = sorted(RECIPE_FOLDER.glob("**/*.yaml"))  # research/ too


def test_the_documented_recipes_exist():
    assert {"finetune.yaml", "quickstart.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(RECIPE_FOLDER)))
def test_every_recipe_loads_and_names_a_known_method(recipe):
    config = load_config(recipe)
    assert config.name == recipe.stem
    assert config.method in methods
    assert methods.get(config.method)(config)  # a method builds at least one stage


SWEEPS = sorted((RECIPE_FOLDER.parent / "benchmarks").glob("*/sweep*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_benchmark_sweep_expands_to_valid_configs(sweep):
    from tartan.sweep import load_sweep

    _, runs = load_sweep(sweep)
    assert runs and all(methods.get(r.config.method)(r.config) for r in runs)
    assert len({r.id for r in runs}) == len(runs)
