"""``mmalign evaluate winrate``: policy vs reference under inference procedures."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.align.procedures import PROCEDURES
from mmalign.config.limits import check_batch_tokens
from mmalign.config.schemas.data import DataConfig
from mmalign.config.schemas.model import ModelConfig
from mmalign.config.schemas.reward import RewardConfig
from mmalign.config.schemas.run import RunConfig
from mmalign.errors import ConfigError

PROCEDURE_NAMES = PROCEDURES  # the registry of mmalign.align.procedures


@dataclass
class ProcedureSpec:
    """``standard`` (one sample), ``bon`` (best-of-n) or ``won`` (worst-of-n)."""

    name: str = field(default="standard", metadata={"choices": PROCEDURE_NAMES})
    n: int = field(default=1, metadata={"ge": 1})


@dataclass
class EvalSamplingConfig:
    """How samples are drawn from both policies."""

    max_new_tokens: int = field(default=32, metadata={"ge": 1})
    temperature: float = field(default=1.0, metadata={"gt": 0})
    top_p: float = field(default=1.0, metadata={"gt": 0, "le": 1})
    top_k: int = field(default=0, metadata={"ge": 0})


@dataclass
class FrontierOverlay:
    """Which analytic curves from ``mmalign frontier`` to draw behind the measured points."""

    transforms: list[str] = field(default_factory=lambda: ["identity", "exp", "optimal"])
    kl_max: float = field(default=2.0, metadata={"gt": 0})
    points: int = field(default=12, metadata={"ge": 2})


@dataclass
class WinrateConfig:
    """Evaluate a policy against its reference: win rates with 95% intervals and KL."""

    recipe: str = "evaluate_winrate"
    run: RunConfig = field(default_factory=lambda: RunConfig(name="winrate"))
    policy: ModelConfig = field(default_factory=ModelConfig)
    reference: ModelConfig = field(default_factory=ModelConfig)
    prompts: DataConfig = field(default_factory=DataConfig)
    selection_reward: RewardConfig = field(default_factory=RewardConfig)
    judge_reward: RewardConfig | None = None  # null: the selection reward also judges
    procedures: list[ProcedureSpec] = field(
        default_factory=lambda: [ProcedureSpec("standard", 1), ProcedureSpec("bon", 4)])
    samples_per_prompt: int = field(default=8, metadata={"ge": 1})
    sampling: EvalSamplingConfig = field(default_factory=EvalSamplingConfig)
    batch_prompts: int = field(default=8, metadata={"ge": 1})
    bootstrap_reps: int = field(default=2000, metadata={"ge": 100})
    frontier: FrontierOverlay = field(default_factory=FrontierOverlay)
    label: str = ""  # name of the method in plots and reports (default: run.name)

    def validate(self) -> None:
        if not self.procedures:
            raise ConfigError(key="procedures", problem="list at least one procedure")
        check_batch_tokens("sampling call", batch_prompts=self.batch_prompts,
                           samples_per_prompt=self.samples_per_prompt,
                           sampling__max_new_tokens=self.sampling.max_new_tokens)
        biggest = max(p.n for p in self.procedures)
        if self.samples_per_prompt < biggest:
            raise ConfigError(key="samples_per_prompt", problem=f"must be >= the largest procedure n ({biggest}), "
                              f"got {self.samples_per_prompt}")
