"""Recipes: short readable scripts that wire components; each owns its loop, run directory and checkpoints.

Nothing imports a recipe except the CLI."""
