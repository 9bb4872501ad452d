"""Schema of ``recipe: decode``: sampling, best-of-N, worst-of-N or reward-guided blockwise decoding."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.config.limits import check_batch_tokens
from mmalign.config.schemas.data import DataConfig
from mmalign.config.schemas.model import ModelConfig
from mmalign.config.schemas.reward import RewardConfig
from mmalign.config.schemas.run import RunConfig
from mmalign.errors import ConfigError

METHODS = ("sample", "best_of_n", "worst_of_n", "blockwise")


@dataclass
class DecodeSection:
    method: str = field(default="best_of_n", metadata={"choices": METHODS})
    n: int = field(default=4, metadata={"ge": 1})  # candidates per prompt (per block for blockwise)
    max_new_tokens: int = field(default=32, metadata={"ge": 1})
    temperature: float = field(default=1.0, metadata={"ge": 0})
    top_p: float = field(default=1.0, metadata={"gt": 0, "le": 1})
    top_k: int = field(default=0, metadata={"ge": 0})
    greedy: bool = False
    stop: list[str] = field(default_factory=list)
    block_size: int = field(default=8, metadata={"ge": 1})  # blockwise only
    batch_size: int = field(default=8, metadata={"ge": 1})  # prompts per sampling call
    reward_batch_size: int = field(default=64, metadata={"ge": 1})


@dataclass
class DecodeConfig:
    """``mmalign decode``: writes ``outputs.jsonl`` (chosen response, all candidates, rewards)."""

    recipe: str = "decode"
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    decode: DecodeSection = field(default_factory=DecodeSection)
    reward: RewardConfig | None = None

    def validate(self) -> None:
        if self.decode.method != "sample" and self.reward is None:
            raise ConfigError(key="reward", problem=f"decode.method '{self.decode.method}' needs a reward section")
        d = self.decode
        check_batch_tokens("sampling call", decode__n=d.n, decode__batch_size=d.batch_size,
                           decode__max_new_tokens=d.max_new_tokens)
