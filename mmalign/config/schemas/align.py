"""The ``align`` recipe's config: CTRL (calibrate, transform, KL-regularised RL) and baselines.

See docs/ctrl.md for what every key does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.align.procedures import PROCEDURES
from mmalign.align.transforms import ALL_TRANSFORMS
from mmalign.config.limits import check_batch_tokens
from mmalign.config.schemas.data import DataConfig
from mmalign.config.schemas.model import ModelConfig
from mmalign.config.schemas.reward import RewardConfig
from mmalign.config.schemas.run import RunConfig
from mmalign.errors import ConfigError

OBJECTIVES = ("rl", "bond")
TRANSFORM_NAMES = ("auto", "raw", *ALL_TRANSFORMS)  # auto: tuned by the calculus; raw: no calibration
KL_ESTIMATORS = ("k1", "k2", "k3", "full")
KL_MODES = ("reward", "reward_to_go", "loss")
KL_CONTROLLERS = ("fixed", "adaptive")
ADVANTAGES = ("rloo", "group_norm", "gae")
SCHEDULES = ("constant", "linear")
LOSS_AGGS = ("seq_sum", "token_mean")


@dataclass
class BanditConfig:
    """A tabular bandit instead of a language model: single-token responses from ``vocab``."""

    prompts: list[str] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)
    ref_logits: list[list[float]] = field(default_factory=list)  # [prompts][vocab]
    rewards: list[list[float]] = field(default_factory=list)  # [prompts][vocab]; may hold .nan

    def validate(self) -> None:
        if not self.prompts or not self.vocab:
            raise ConfigError(key="prompts", problem="a bandit needs at least one prompt and one vocab entry")
        for key in ("ref_logits", "rewards"):
            table = getattr(self, key)
            if len(table) != len(self.prompts) or any(len(row) != len(self.vocab) for row in table):
                raise ConfigError(key=key, problem=f"must have one row per prompt and one entry per vocab item "
                                  f"({len(self.prompts)} x {len(self.vocab)})")


@dataclass
class CalibrationConfig:
    num_samples: int = field(default=16, metadata={"ge": 1})  # K reference rollouts per prompt
    batch_prompts: int = field(default=8, metadata={"ge": 1})
    max_new_tokens: int = field(default=0, metadata={"ge": 0})  # 0: rollout.max_new_tokens
    store: str = ""  # calibration store file; "" = <run dir>/calibration.safetensors


@dataclass
class TransformConfig:
    name: str = field(default="auto", metadata={"choices": TRANSFORM_NAMES})
    t: float | None = field(default=None, metadata={"gt": 0})
    k: float | None = field(default=None, metadata={"gt": 0})
    procedure: str = field(default="bon", metadata={"choices": PROCEDURES})  # inference-time procedure
    n: int = field(default=4, metadata={"ge": 1})  # its N (also BOND's N)
    # name auto: the smallest t whose exact win rate is within this of the best t's (a flatter
    # transform has a larger beta, which the RL can hold; 0: the best t itself)
    t_tolerance: float = field(default=0.005, metadata={"ge": 0, "le": 0.5})


@dataclass
class RolloutConfig:
    prompts_per_step: int = field(default=8, metadata={"ge": 1})
    n: int = field(default=4, metadata={"ge": 1})  # continuations per prompt
    max_new_tokens: int = field(default=32, metadata={"ge": 1})
    temperature: float = field(default=1.0, metadata={"gt": 0})
    top_p: float = field(default=1.0, metadata={"gt": 0, "le": 1})
    top_k: int = field(default=0, metadata={"ge": 0})


@dataclass
class KLConfig:
    estimator: str = field(default="k1", metadata={"choices": KL_ESTIMATORS})
    mode: str = field(default="reward", metadata={"choices": KL_MODES})
    beta: float | None = field(default=0.05, metadata={"gt": 0})  # null: solve beta for `target`
    controller: str = field(default="fixed", metadata={"choices": KL_CONTROLLERS})
    target: float = field(default=1.0, metadata={"gt": 0})  # nats per sequence
    horizon: float = field(default=10000.0, metadata={"gt": 0})
    # adaptive controller: beta stays in [beta_min, beta_max] (null: initial beta / 10, initial beta * 10)
    # and is held for the first warmup_steps steps
    beta_min: float | None = field(default=None, metadata={"gt": 0})
    beta_max: float | None = field(default=None, metadata={"gt": 0})
    warmup_steps: int = field(default=0, metadata={"ge": 0})


@dataclass
class AdvantageConfig:
    estimator: str = field(default="rloo", metadata={"choices": ADVANTAGES})
    whiten: bool = False
    gamma: float = field(default=1.0, metadata={"ge": 0, "le": 1})
    lam: float = field(default=0.95, metadata={"ge": 0, "le": 1})


@dataclass
class TrainConfig:
    steps: int = field(default=100, metadata={"ge": 1})
    lr: float = field(default=1e-5, metadata={"gt": 0, "le": 1e12})  # past ~1e30 AdamW overflows float32
    value_lr: float | None = field(default=None, metadata={"gt": 0, "le": 1e12})
    weight_decay: float = field(default=0.0, metadata={"ge": 0})
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = field(default=1e-8, metadata={"gt": 0, "le": 1.0})  # AdamW eps (torch default)
    schedule: str = field(default="constant", metadata={"choices": SCHEDULES})
    warmup_steps: int = field(default=0, metadata={"ge": 0})
    epochs: int = field(default=1, metadata={"ge": 1})  # passes over each rollout batch
    minibatches: int = field(default=1, metadata={"ge": 1})  # optimizer steps per epoch
    grad_accum: int = field(default=1, metadata={"ge": 1})  # micro-batches per minibatch
    max_grad_norm: float = field(default=1.0, metadata={"ge": 0})  # 0: no clipping
    clip: float = field(default=0.2, metadata={"gt": 0})
    value_clip: float = field(default=0.2, metadata={"gt": 0})
    vf_coef: float = field(default=0.1, metadata={"ge": 0})
    loss_agg: str = field(default="seq_sum", metadata={"choices": LOSS_AGGS})
    check_sync: bool = False  # log a per-rank parameter checksum every step


@dataclass
class BondConfig:
    forward_weight: float = field(default=0.5, metadata={"ge": 0, "le": 1})  # Jeffreys alpha


@dataclass
class CheckpointConfig:
    every: int = field(default=50, metadata={"ge": 1})
    keep: int = field(default=3, metadata={"ge": 1})


@dataclass
class AlignConfig:
    """``mmalign align``: CTRL and its baselines on a policy, a reward and a prompt set."""

    recipe: str = "align"
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig | None = None
    reward: RewardConfig | None = None
    data: DataConfig | None = None
    bandit: BanditConfig | None = None
    objective: str = field(default="rl", metadata={"choices": OBJECTIVES})
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bond: BondConfig = field(default_factory=BondConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def validate(self) -> None:
        if self.bandit is None:
            for key in ("model", "reward", "data"):
                if getattr(self, key) is None:
                    raise ConfigError(key=key, problem="required (or give a 'bandit:' section instead of model/reward/data)")
        elif self.model is not None:
            raise ConfigError(key="bandit", problem="give either a bandit or a model, not both")
        tr = self.transform
        if tr.name in ("exp", "neg_exp") and tr.t is None:
            raise ConfigError(key="transform.t", problem=f"transform '{tr.name}' needs t (or use name: auto)")
        if tr.name == "power" and tr.k is None:
            raise ConfigError(key="transform.k", problem="transform 'power' needs k")
        if self.advantage.estimator in ("rloo", "group_norm") and self.rollout.n < 2:
            raise ConfigError(key="rollout.n", problem=f"advantage '{self.advantage.estimator}' needs at least 2 samples per prompt")
        if self.kl.mode == "reward_to_go" and self.advantage.estimator == "group_norm":
            raise ConfigError(key="kl.mode", problem="'reward_to_go' needs advantage.estimator rloo or gae (group_norm "
                              "normalises whole-sequence scores)")
        if self.kl.mode == "loss" and self.kl.estimator == "k1":
            raise ConfigError(key="kl.estimator", problem="k1 has zero expected gradient as a loss; use k2 (exact reverse-KL "
                              "gradient) or k3, or kl.mode: reward")
        kl = self.kl
        if kl.beta_min is not None and kl.beta_max is not None and kl.beta_min > kl.beta_max:
            raise ConfigError(key="kl.beta_min", problem=f"{kl.beta_min} is above kl.beta_max ({kl.beta_max})")
        if kl.beta is not None and ((kl.beta_min is not None and kl.beta < kl.beta_min)
                                    or (kl.beta_max is not None and kl.beta > kl.beta_max)):
            raise ConfigError(key="kl.beta", problem=f"{kl.beta} is outside [kl.beta_min, kl.beta_max]")
        if self.objective == "bond" and tr.n < 2:
            raise ConfigError(key="transform.n", problem="BOND distils best-of-N with N >= 2")
        if self.objective == "bond" and self.calibration.num_samples < tr.n:
            raise ConfigError(key="calibration.num_samples", problem="BOND needs at least N reference samples per prompt")
        ro, cal = self.rollout, self.calibration
        check_batch_tokens("rollout", rollout__prompts_per_step=ro.prompts_per_step, rollout__n=ro.n,
                           rollout__max_new_tokens=ro.max_new_tokens)
        check_batch_tokens("calibration batch", calibration__batch_prompts=cal.batch_prompts,
                           calibration__num_samples=cal.num_samples,
                           calibration__max_new_tokens=cal.max_new_tokens or ro.max_new_tokens)
        if self.objective == "bond":
            check_batch_tokens("best-of-N sample", rollout__prompts_per_step=ro.prompts_per_step,
                               transform__n=tr.n, rollout__max_new_tokens=ro.max_new_tokens)
        rows = self.rollout.prompts_per_step * self.rollout.n
        if rows < self.train.minibatches * self.train.grad_accum:
            raise ConfigError(key="train.minibatches", problem=f"{rows} rows per step cannot fill {self.train.minibatches} minibatches "
                              f"x {self.train.grad_accum} micro-batches")
        if len(self.train.adam_betas) != 2 or not all(0 <= b < 1 for b in self.train.adam_betas):
            raise ConfigError(key="train.adam_betas", problem="two numbers in [0, 1)")
