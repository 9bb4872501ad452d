"""``reward:`` sections: which scorer to use, selected by ``kind``.

One flat schema serves every kind; each kind reads only its own keys (listed below) and
:meth:`RewardConfig.validate` checks that the keys a kind needs are set. Nested reward configs
(``ensemble.components``) and rule lists are plain dicts validated by
:func:`mmalign.rewards.build_reward`, which names the key path of any mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmalign.errors import ConfigError

REWARD_KINDS = ("hf_classifier", "python", "rules", "clip_score", "ensemble", "bundled_text",
                "bundled_smooth", "bundled_style")
FORMATS = ("auto", "chat", "concat")
CLIP_TEXTS = ("response", "prompt_response")


@dataclass
class RewardConfig:
    """A reward. Keys by kind:

    * ``hf_classifier``: path, label_index, format, separator, max_length, batch_size, device, dtype,
      trust_remote_code, revision
    * ``python``: function (``package.module:function`` or ``path/to/file.py:function``), deterministic
    * ``rules``: rules (list of ``{type: ..., weight: ...}``; see docs/rewards.md)
    * ``clip_score``: model, pretrained, text, scale, batch_size, device
    * ``ensemble``: components (list of reward dicts, each with an optional ``weight``)
    * ``bundled_text``: no keys (the gold reward of the bundled text task)
    * ``bundled_smooth``: no keys (the same task's continuous reward: quality + a style score)
    * ``bundled_style``: no keys (a continuous reward: the style score alone, per-category scales)
    """

    kind: str = field(default="rules", metadata={"choices": REWARD_KINDS})
    # hf_classifier
    path: str = ""
    revision: str | None = None
    label_index: int = field(default=0, metadata={"ge": 0})
    format: str = field(default="auto", metadata={"choices": FORMATS})
    separator: str = ""
    max_length: int = field(default=512, metadata={"ge": 8})
    batch_size: int = field(default=16, metadata={"ge": 1})
    device: str = "auto"
    dtype: str = "float32"
    trust_remote_code: bool = False
    # python
    function: str = ""
    deterministic: bool = True
    # rules
    rules: list[Any] = field(default_factory=list)
    # clip_score
    model: str = "ViT-B-32"
    pretrained: str | None = None
    text: str = field(default="response", metadata={"choices": CLIP_TEXTS})
    scale: float = 1.0
    # ensemble
    components: list[Any] = field(default_factory=list)

    def validate(self) -> None:
        if self.kind == "hf_classifier" and not self.path:
            raise ConfigError(key="path", problem="an hf_classifier reward needs a model directory or hub id")
        if self.kind == "python" and not self.function:
            raise ConfigError(key="function", problem="a python reward needs 'package.module:function' or 'file.py:function'")
        if self.kind == "rules" and not self.rules:
            raise ConfigError(key="rules", problem="a rules reward needs at least one rule")
        if self.kind == "ensemble" and not self.components:
            raise ConfigError(key="components", problem="an ensemble reward needs at least one component")
