"""``recipe: reward``: Bradley-Terry reward-model training on preference pairs."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.config.limits import check_batch_tokens
from mmalign.config.schemas.data import DataConfig
from mmalign.config.schemas.reward import FORMATS
from mmalign.config.schemas.run import RunConfig
from mmalign.errors import ConfigError


@dataclass
class ToyRewardModelConfig:
    """A fresh Llama-architecture classifier at toy width, with a BPE tokenizer trained on the data."""

    hidden_size: int = field(default=64, metadata={"ge": 8})
    num_layers: int = field(default=2, metadata={"ge": 1})
    num_heads: int = field(default=4, metadata={"ge": 1})
    num_kv_heads: int = field(default=2, metadata={"ge": 1})
    vocab_size: int = field(default=512, metadata={"ge": 300})
    max_position: int = field(default=512, metadata={"ge": 16})

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(key="hidden_size", problem=f"must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(key="num_kv_heads", problem=f"must divide num_heads ({self.num_heads})")


@dataclass
class RewardModelInit:
    """Where the reward model starts: a checkpoint (``path``) or, if empty, a toy model."""

    path: str = ""  # causal LM or sequence-classifier folder, or a hub id
    revision: str | None = None
    trust_remote_code: bool = False
    toy: ToyRewardModelConfig = field(default_factory=ToyRewardModelConfig)
    format: str = field(default="auto", metadata={"choices": FORMATS})
    separator: str = ""


@dataclass
class RewardData:
    """Preference pairs: ``train`` and optional ``eval`` (else ``eval_fraction`` of train is held out)."""

    train: DataConfig = field(default_factory=lambda: DataConfig(path="bundled:text/prefs_train"))
    eval: DataConfig | None = None
    eval_fraction: float = field(default=0.1, metadata={"gt": 0.0, "lt": 1.0})


@dataclass
class RewardTrainLoop:
    """Optimisation of the Bradley-Terry loss ``-log sigmoid(r(x, y_c) - r(x, y_r))``."""

    lr: float = field(default=1e-3, metadata={"gt": 0.0, "le": 1e12})  # past ~1e30 AdamW overflows float32
    weight_decay: float = field(default=0.0, metadata={"ge": 0.0})
    batch_size: int = field(default=32, metadata={"ge": 1})
    epochs: int = field(default=3, metadata={"ge": 1})
    max_steps: int | None = field(default=None, metadata={"ge": 1})
    max_minutes: float | None = field(default=None, metadata={"gt": 0.0})
    warmup_steps: int = field(default=0, metadata={"ge": 0})
    grad_clip: float = field(default=1.0, metadata={"gt": 0.0})
    max_length: int = field(default=256, metadata={"ge": 8})
    eval_every: int = field(default=50, metadata={"ge": 1})
    save_every: int = field(default=200, metadata={"ge": 1})
    log_every: int = field(default=10, metadata={"ge": 1})
    eval_batch_size: int = field(default=64, metadata={"ge": 1})


@dataclass
class RewardRecipeConfig:
    """``mmalign reward CONFIG``."""

    recipe: str = "reward"
    run: RunConfig = field(default_factory=lambda: RunConfig(name="reward"))
    model: RewardModelInit = field(default_factory=RewardModelInit)
    data: RewardData = field(default_factory=RewardData)
    train: RewardTrainLoop = field(default_factory=RewardTrainLoop)

    def validate(self) -> None:
        t = self.train  # a batch holds a chosen and a rejected text per pair
        check_batch_tokens("training batch", train__batch_size=t.batch_size, pair=2, train__max_length=t.max_length)
        check_batch_tokens("evaluation batch", train__eval_batch_size=t.eval_batch_size, pair=2,
                           train__max_length=t.max_length)
