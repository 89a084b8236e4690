from pathlib import Path

import pytest

from tartan.config import load_config
from tartan.methods import methods

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_the_documented_recipes_exist():
    assert {"finetune.yaml", "quickstart.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_names_a_known_method(recipe):
    config = load_config(recipe)
    assert config.name == recipe.stem
    assert config.method in methods
    assert methods.get(config.method)(config)  # a method builds at least one stage
