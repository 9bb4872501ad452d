"""The ``model:`` section: which checkpoint, how to load it (precision, device, LoRA, quantisation)
and how prompts are turned into tokens (chat template, length limits, truncation policy)."""

from __future__ import annotations

from dataclasses import dataclass, field

QUANTIZATION = ("none", "4bit", "8bit")
TRUNCATION = ("error", "left")
CHAT_TEMPLATE = ("auto", "on", "off")
REFERENCE = ("auto", "copy", "adapter_disabled")
DTYPES = ("run", "auto", "float32", "bfloat16", "float16")
DEVICES = ("run", "auto", "cpu", "cuda", "mps")


@dataclass
class LoraConfig:
    """LoRA adapters through peft (``enabled: true`` to train adapters instead of full weights)."""

    enabled: bool = False
    r: int = field(default=8, metadata={"ge": 1})
    alpha: float = field(default=16.0, metadata={"gt": 0})
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    """A causal LM from a local directory (saved with ``save_pretrained``) or a hub id."""

    path: str = field(default="???", metadata={"nonempty": True})
    tokenizer: str = ""  # defaults to ``path``
    dtype: str = field(default="run", metadata={"choices": DTYPES})  # "run": take run.dtype
    device: str = field(default="run", metadata={"choices": DEVICES})  # "run": take run.device
    quantization: str = field(default="none", metadata={"choices": QUANTIZATION})
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    chat_template: str = field(default="auto", metadata={"choices": CHAT_TEMPLATE})
    max_prompt_tokens: int = field(default=0, metadata={"ge": 0})  # 0: context length - max_new_tokens
    truncation: str = field(default="error", metadata={"choices": TRUNCATION})
    reference: str = field(default="auto", metadata={"choices": REFERENCE})

    def __post_init__(self) -> None:
        # YAML reads a bare `on`/`off` as a boolean, which arrives here as "True"/"False".
        self.chat_template = {"true": "on", "false": "off"}.get(str(self.chat_template).lower(),
                                                                 self.chat_template)
