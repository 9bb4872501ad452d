"""Validated structured configs: YAML files with includes, key=value overrides, one-line errors."""

from mmalign.config.loader import load_config, load_yaml_tree, parse_overrides, to_yaml
from mmalign.config.registry import recipe_names, schema_for

__all__ = ["load_config", "load_yaml_tree", "parse_overrides", "recipe_names", "schema_for", "to_yaml"]
