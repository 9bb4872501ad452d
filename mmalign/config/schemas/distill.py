"""Schema of ``recipe: distill``: a student learns the teacher's token distributions."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.config.limits import check_batch_tokens
from mmalign.config.schemas.data import DataConfig
from mmalign.config.schemas.model import ModelConfig
from mmalign.config.schemas.run import RunConfig
from mmalign.config.schemas.sft import TrainLoopConfig
from mmalign.errors import ConfigError

SOURCES = ("data", "teacher")


@dataclass
class DistillTrainConfig(TrainLoopConfig):
    temperature: float = field(default=1.0, metadata={"gt": 0})  # softens both distributions (loss x T^2)
    hard_weight: float = field(default=0.0, metadata={"ge": 0, "le": 1})  # loss = (1-w) KL + w CE
    source: str = field(default="data", metadata={"choices": SOURCES})  # responses: dataset or teacher samples
    max_new_tokens: int = field(default=32, metadata={"ge": 1})  # teacher samples (source: teacher)


@dataclass
class DistillConfig:
    """``mmalign distill``: forward KL(teacher || student) over the shared vocabulary on response
    tokens, optionally mixed with cross-entropy on the response tokens themselves."""

    recipe: str = "distill"
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)  # the student
    teacher: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval_data: DataConfig | None = None
    eval_fraction: float = field(default=0.1, metadata={"ge": 0, "lt": 1})
    train: DistillTrainConfig = field(default_factory=DistillTrainConfig)

    def validate(self) -> None:
        if self.teacher.lora.enabled:
            raise ConfigError(key="teacher.lora.enabled", problem="the teacher is frozen; LoRA applies to the student (model.lora)")
        t = self.train
        check_batch_tokens("training batch", train__batch_size=t.batch_size, train__max_seq_len=t.max_seq_len)
        check_batch_tokens("evaluation batch", train__eval_batch_size=t.eval_batch_size,
                           train__max_seq_len=t.max_seq_len)
        check_batch_tokens("teacher sampling call", train__batch_size=t.batch_size,
                           train__max_new_tokens=t.max_new_tokens)
