"""Schema of ``recipe: games``: transparent matrix games, learners, training and sweeps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mmalign.config.schemas.run import RunConfig
from mmalign.errors import ConfigError

# Kept in sync with mmalign.games (tests check it) so loading a config does not import torch.
GAME_NAMES = ("prisoners_dilemma", "chicken", "stag_hunt", "matching_pennies", "custom")
POLICY_KINDS = ("transparent", "mixed")
SEMANTICS = ("fresh", "shared")
LEARNER_NAMES = ("naive", "la", "lola", "sos")


def _is_2x2(m: Any) -> bool:
    return (isinstance(m, list) and len(m) == 2
            and all(isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r) for r in m))


@dataclass
class GameConfig:
    """A built-in game, or ``custom`` with both 2×2 payoff matrices (row = player 1's action)."""

    name: str = field(default="prisoners_dilemma", metadata={"choices": GAME_NAMES})
    payoff1: list[list[float]] | None = None
    payoff2: list[list[float]] | None = None

    def validate(self) -> None:
        if self.name == "custom":
            for key in ("payoff1", "payoff2"):
                if not _is_2x2(getattr(self, key)):
                    raise ConfigError(key=key, problem="a custom game needs a 2x2 payoff matrix, e.g. [[3, 0], [5, 1]]")
                bad = [v for row in getattr(self, key) for v in row if not math.isfinite(v)]
                if bad:
                    raise ConfigError(key=key, problem=f"payoffs must be finite numbers, got {bad[0]}")
        elif self.payoff1 is not None or self.payoff2 is not None:
            raise ConfigError(key="payoff1", problem="payoff matrices are only used with name: custom")


@dataclass
class PolicyConfig:
    """Transparent ε-grounded policy (or the ``mixed`` non-transparent baseline)."""

    kind: str = field(default="transparent", metadata={"choices": POLICY_KINDS})
    epsilon: float = field(default=0.1, metadata={"gt": 0.0, "le": 1.0})
    learn_e: bool = False
    semantics: str = field(default="fresh", metadata={"choices": SEMANTICS})


@dataclass
class LearnerConfig:
    """Update rule; ``lookahead`` (η, the opponent's assumed step) defaults to ``lr`` (α)."""

    name: str = field(default="lola", metadata={"choices": LEARNER_NAMES})
    lr: float = field(default=1.0, metadata={"gt": 0.0})
    lookahead: float | None = field(default=None, metadata={"ge": 0.0})
    taylor: bool = False
    sos_a: float = field(default=0.5, metadata={"gt": 0.0, "lt": 1.0})
    sos_b: float = field(default=0.1, metadata={"gt": 0.0, "lt": 1.0})


@dataclass
class TrainConfig:
    """Independent seeds (pairs of agents) trained at once, steps, init θ ~ N(0, init_std²)."""

    seeds: int = field(default=1000, metadata={"ge": 1})
    steps: int = field(default=500, metadata={"ge": 0})
    init_std: float = field(default=1.0, metadata={"ge": 0.0})
    log_every: int = field(default=10, metadata={"ge": 1})


@dataclass
class AnalysisConfig:
    """A run ends in outcome o when its final P(o) > threshold; else it is ``mixed``."""

    threshold: float = field(default=0.9, metadata={"ge": 0.5, "lt": 1.0})
    plots: bool = True
    save_final: bool = True  # per-seed final joint outcomes in results.json


SWEEP_KEYS = (
    "game.name", "policy.kind", "policy.epsilon", "policy.learn_e", "policy.semantics",
    "learner.name", "learner.lr", "learner.lookahead", "learner.taylor", "learner.sos_a",
    "learner.sos_b", "train.seeds", "train.steps", "train.init_std",
)


@dataclass
class SweepConfig:
    """``grid``: dotted key -> list of values; ``games sweep`` runs every combination."""

    grid: dict[str, list[Any]] = field(default_factory=dict)

    def validate(self) -> None:
        for key, values in self.grid.items():
            if key not in SWEEP_KEYS:
                raise ConfigError(key="grid", problem=f"cannot sweep '{key}' (sweepable: {', '.join(SWEEP_KEYS)})")
            if not isinstance(values, list) or not values:
                raise ConfigError(key="grid", problem=f"'{key}' needs a non-empty list of values")


@dataclass
class GamesConfig:
    """``mmalign games run|sweep``: learning between transparent agents in a 2×2 game."""

    recipe: str = "games"
    run: RunConfig = field(default_factory=lambda: RunConfig(name="games", device="cpu"))
    game: GameConfig = field(default_factory=GameConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def validate(self) -> None:
        if self.run.dtype in ("bfloat16", "float16"):
            raise ConfigError(key="run.dtype", problem="games need float32 or auto (float64)")
