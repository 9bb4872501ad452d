"""The checkpoint being exported: a Hugging Face causal-LM directory, validated up front.

A LoRA adapter directory (``adapter_config.json``) is merged into its base model first
(peft ``merge_and_unload``), so every exporter sees plain full weights.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign.errors import UserError

# model_type values whose weights follow the Llama layout the GGUF / ONNX exporters expect.
LLAMA_TYPES = ("llama",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass
class Checkpoint:
    """A validated checkpoint directory with full weights."""

    path: Path
    config: dict[str, Any]
    merged_from_adapter: Path | None = None
    _tmp: list[Path] = field(default_factory=list, repr=False)

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def is_llama(self) -> bool:
        return self.model_type in LLAMA_TYPES

    def weights_bytes(self) -> int:
        """Bytes of the weight files (safetensors or .bin) in the checkpoint."""
        files = list(self.path.glob("*.safetensors")) or list(self.path.glob("*.bin"))
        return sum(f.stat().st_size for f in files)

    def load_model(self, **kwargs: Any):
        """The model in fp32 eval mode on CPU (the reference every export is compared with)."""
        import torch
        from transformers import AutoModelForCausalLM

        from mmalign.models.loading import quiet_hf_progress

        quiet_hf_progress()  # -q: no weight-loading bar
        kwargs.setdefault("dtype", torch.float32)
        try:
            model = AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{self.path}: cannot load the model ({exc})") from exc
        return model.eval()

    def copy_tokenizer_files(self, out: Path) -> None:
        for name in TOKENIZER_FILES:
            src = self.path / name
            if src.is_file():
                shutil.copy2(src, out / name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable JSON ({exc})") from exc


def _merge_adapter(adapter_dir: Path, tmp: Path) -> Path:
    """Merge a peft LoRA adapter into its base model; saves the result under ``tmp``."""
    from mmalign.models.loading import adapter_base
    from mmalign.models.text import META_FILE

    _read_json(adapter_dir / "adapter_config.json")
    meta = _read_json(adapter_dir / META_FILE) if (adapter_dir / META_FILE).is_file() else {}
    base = adapter_base(adapter_dir, meta, "--checkpoint")
    if not Path(base).is_dir():
        raise UserError(f"{adapter_dir / 'adapter_config.json'}: base_model_name_or_path '{base}' is not a local "
                        "directory; merge the adapter first or export the base model")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True)
    tok_src = adapter_dir if (adapter_dir / "tokenizer.json").is_file() else Path(base)
    for name in TOKENIZER_FILES:
        if (tok_src / name).is_file():
            shutil.copy2(tok_src / name, tmp / name)
    return tmp


@contextlib.contextmanager
def open_checkpoint(path: str | Path, *, require_llama: bool = True) -> Iterator[Checkpoint]:
    """Validate ``path`` (config, architecture, tokenizer) and yield it with full weights."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: checkpoint directory not found")
    tmp_dirs: list[Path] = []
    try:
        merged_from = None
        if (path / "adapter_config.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix="mmalign-merged-"))
            tmp_dirs.append(tmp)
            merged_from, path = path, _merge_adapter(path, tmp)
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: no config.json (expected a Hugging Face save_pretrained directory)")
        config = _read_json(path / "config.json")
        ckpt = Checkpoint(path=path, config=config, merged_from_adapter=merged_from)
        if require_llama and not ckpt.is_llama:
            archs = ",".join(config.get("architectures") or []) or ckpt.model_type or "unknown"
            raise UserError(f"{path}: unsupported architecture '{archs}' (model_type '{ckpt.model_type}'); "
                            "GGUF/ONNX export supports Llama-architecture causal LMs (LlamaForCausalLM)")
        if not (path / "tokenizer.json").is_file():
            raise UserError(f"{path}: missing tokenizer.json (save the tokenizer with the model: "
                            "tokenizer.save_pretrained(dir))")
        if not (list(path.glob("*.safetensors")) or list(path.glob("*.bin"))):
            raise UserError(f"{path}: no weight files (*.safetensors or *.bin)")
        yield ckpt
    finally:
        for tmp in tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)
