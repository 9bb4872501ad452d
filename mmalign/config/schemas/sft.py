"""Schema of ``recipe: sft``: supervised fine-tuning on (prompt, response) demonstrations."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.config.limits import check_batch_tokens
from mmalign.config.schemas.data import DataConfig
from mmalign.config.schemas.model import ModelConfig
from mmalign.config.schemas.run import RunConfig

TRAINABLE_SCOPES = ("all", "projector")


@dataclass
class TrainLoopConfig:
    """Optimisation, evaluation and checkpoint cadence shared by ``sft`` and ``distill``."""

    steps: int = field(default=100, metadata={"ge": 1})
    batch_size: int = field(default=8, metadata={"ge": 1})
    grad_accum: int = field(default=1, metadata={"ge": 1})
    lr: float = field(default=1e-4, metadata={"gt": 0, "le": 1e12})  # past ~1e30 AdamW overflows float32
    weight_decay: float = field(default=0.0, metadata={"ge": 0})
    warmup_steps: int = field(default=0, metadata={"ge": 0})
    max_grad_norm: float = field(default=1.0, metadata={"ge": 0})  # 0: no clipping
    max_seq_len: int = field(default=512, metadata={"ge": 8})  # prompt + response tokens per example
    eval_every: int = field(default=50, metadata={"ge": 0})  # 0: only before and after training
    eval_batch_size: int = field(default=16, metadata={"ge": 1})
    save_every: int = field(default=0, metadata={"ge": 0})  # 0: only the final checkpoint
    log_every: int = field(default=10, metadata={"ge": 1})


@dataclass
class SFTTrainConfig(TrainLoopConfig):
    packing: bool = False  # concatenate examples into max_seq_len blocks (loss still on responses only)
    # all: every weight the loaded model trains (full weights, or the LoRA adapters, plus media
    # projectors); projector: only the media projectors of a multimodal model (LLaVA's first stage)
    trainable: str = field(default="all", metadata={"choices": TRAINABLE_SCOPES})


@dataclass
class SFTConfig:
    """``mmalign sft``: loss on response tokens only; the result is a checkpoint under ``final/``."""

    recipe: str = "sft"
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval_data: DataConfig | None = None  # default: hold out eval_fraction of data
    eval_fraction: float = field(default=0.1, metadata={"ge": 0, "lt": 1})
    train: SFTTrainConfig = field(default_factory=SFTTrainConfig)

    def validate(self) -> None:
        t = self.train
        check_batch_tokens("training batch", train__batch_size=t.batch_size, train__max_seq_len=t.max_seq_len)
        check_batch_tokens("evaluation batch", train__eval_batch_size=t.eval_batch_size,
                           train__max_seq_len=t.max_seq_len)
