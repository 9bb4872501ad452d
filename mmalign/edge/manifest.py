"""``mmalign_export.json``: the small manifest next to every exported model, read by the runners."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "mmalign_export.json"


@dataclass
class Manifest:
    format: str  # onnx | gguf | bnb
    quant: str
    model_file: str  # relative to the export directory ("" for a bnb save_pretrained dir)
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    tokenizer_file: str = "tokenizer.json"
    source: str = ""
    mmalign_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {MANIFEST_NAME} (is this an mmalign export directory?)")
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
