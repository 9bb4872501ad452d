"""Config of ``mmalign evaluate mmlu`` (recipe ``evaluate_mmlu``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.config.schemas.run import RunConfig
from mmalign.errors import ConfigError

MODES = ("loglik", "cot", "ur-cot")
SPLITS = ("dev", "val", "test")


@dataclass
class CoTConfig:
    """Chain-of-thought sampling and uncertainty routing."""

    k: int = field(default=8, metadata={"ge": 1})
    temperature: float = field(default=0.7, metadata={"gt": 0})
    top_p: float = field(default=1.0, metadata={"gt": 0, "le": 1})
    max_new_tokens: int = field(default=256, metadata={"ge": 1})
    tau: float | None = field(default=None, metadata={"ge": 0})  # null: tune on tune_split
    tune_split: str = field(default="val", metadata={"choices": SPLITS})


@dataclass
class MMLUEvalConfig:
    """MMLU-style evaluation of one model (or a before/after pair with ``compare``)."""

    recipe: str = "evaluate_mmlu"
    run: RunConfig = field(default_factory=RunConfig)
    model: str = ""  # checkpoint directory, .onnx or .gguf
    compare: str | None = None  # a second model: report after - before per subject
    data: str = ""  # CSV tree, JSONL file/dir, or HF dataset dir/name
    shots: int = field(default=5, metadata={"ge": 0})
    subjects: list[str] = field(default_factory=list)  # empty: all subjects
    split: str = field(default="test", metadata={"choices": SPLITS})
    limit: int | None = field(default=None, metadata={"ge": 1})  # questions per subject
    batch_size: int = field(default=16, metadata={"ge": 1})
    mode: str = field(default="loglik", metadata={"choices": MODES})
    prefix_cache: bool = True
    add_bos_token: bool | None = None  # as lm-eval's hf model: None keeps the tokenizer's default
    bootstrap: int = field(default=1000, metadata={"ge": 0})
    cot: CoTConfig = field(default_factory=CoTConfig)
    out: str | None = None  # directory for results.json, report.md, predictions.jsonl

    def validate(self) -> None:
        if not self.model:
            raise ConfigError(key="model", problem="required (a checkpoint directory, .onnx or .gguf); pass --model")
        if not self.data:
            raise ConfigError(key="data", problem="required (an MMLU CSV tree, JSONL or HF dataset); pass --data")
