"""Which schema a config file uses: every config names its recipe with a top-level ``recipe:`` key."""

from __future__ import annotations

import difflib
import importlib

from mmalign.errors import ConfigError

# recipe name -> "module:ClassName" (imported lazily so `mmalign --help` stays fast)
SCHEMAS: dict[str, str] = {
    "run": "mmalign.config.schemas.run:RunOnlyConfig",
    "align": "mmalign.config.schemas.align:AlignConfig",
    "games": "mmalign.config.schemas.games:GamesConfig",
    "reward": "mmalign.config.schemas.reward_train:RewardRecipeConfig",
    "evaluate_mmlu": "mmalign.config.schemas.mmlu:MMLUEvalConfig",
    "evaluate_winrate": "mmalign.config.schemas.winrate:WinrateConfig",
    "sft": "mmalign.config.schemas.sft:SFTConfig",
    "distill": "mmalign.config.schemas.distill:DistillConfig",
    "decode": "mmalign.config.schemas.decode:DecodeConfig",
}


def recipe_names() -> list[str]:
    """Names of recipes that have a config schema."""
    return sorted(SCHEMAS)


def schema_for(recipe: str) -> type:
    """Return the dataclass schema of ``recipe``."""
    target = SCHEMAS.get(recipe)
    if target is None:
        close = difflib.get_close_matches(recipe, SCHEMAS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(recipe_names())})"
        raise ConfigError(f"unknown recipe '{recipe}'{hint}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
