"""Helpers verbs share: load a recipe's config from a file plus overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmalign.config import load_config, load_yaml_tree, schema_for
from mmalign.errors import ConfigError


def recipe_of(path: str | Path) -> str:
    """The ``recipe:`` named at the top of a config file (or its includes)."""
    tree, origins = load_yaml_tree(path)
    recipe = tree.get("recipe")
    if not recipe:
        raise ConfigError(f"{path}: no 'recipe:' key; every config names the recipe it is for")
    return str(recipe)


def load_recipe_config(path: str | Path, overrides: Sequence[str] = (), expect: str | None = None) -> Any:
    """Load ``path`` with the schema of the recipe it names (which must be ``expect`` if given)."""
    recipe = recipe_of(path)
    if expect is not None and recipe != expect:
        raise ConfigError(f"{path}: this is a '{recipe}' config, but the command expects a '{expect}' config")
    return load_config(path, schema_for(recipe), overrides)
