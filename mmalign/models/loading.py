"""Load a policy from a ``model:`` config (or a checkpoint path): the one factory every verb uses.

A checkpoint is a local directory written by ``save_pretrained`` / :meth:`TextPolicy.save` (full
weights, or a peft adapter whose ``mmalign_policy.json`` / ``adapter_config.json`` names its base)
or a hub id. A path that looks local but is missing is a one-line :class:`UserError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmalign.config.schemas.model import LoraConfig, ModelConfig
from mmalign.errors import UserError
from mmalign.models.text import META_FILE, TextPolicy
from mmalign.utils.device import resolve_device, resolve_dtype


def resolve_checkpoint(path: str, key: str = "model.path") -> str:
    """A local checkpoint directory (as a string) or a hub id; raise if a local-looking path is missing."""
    p = Path(path).expanduser()
    if p.is_dir():
        return str(p)
    if p.exists():
        raise UserError(f"{key}: {path} is a file, expected a checkpoint directory")
    if path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path or path.endswith("/"):
        raise UserError(f"{key}: checkpoint directory not found: {path}")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable JSON ({exc})") from None


def _from_pretrained(loader: Any, name: str, what: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model.path: cannot load the {what} from '{name}': {first}") from None


def _saved_quantization(base: str) -> str | None:
    """"4bit"/"8bit" when a local checkpoint was saved already quantised, else None."""
    config = Path(base) / "config.json"
    if not config.is_file():
        return None
    q = _read_json(config).get("quantization_config")
    if not q:
        return None
    return "4bit" if q.get("load_in_4bit") else "8bit" if q.get("load_in_8bit") else None


def quiet_hf_progress() -> None:
    """Silence transformers' own progress bars (weight loading / shard writing) under --quiet."""
    from mmalign.utils.progress import is_quiet

    if is_quiet():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _keep_cpu_4bit_layout(model: Any) -> None:
    """bitsandbytes repacks 4-bit weights for a CPU kernel on the first eval forward and unpacks
    them (lossily) on save, so a saved model would differ from the one in memory; keep the
    portable layout so that save -> load reproduces log-probs exactly."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def load_text_policy(cfg: ModelConfig, *, run_device: str = "auto", run_dtype: str = "auto") -> TextPolicy:
    """Build a :class:`TextPolicy` from a ``model:`` section (``run`` device/dtype fill ``"run"``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_hf_progress()
    device = resolve_device(run_device if cfg.device == "run" else cfg.device)
    dtype = resolve_dtype(run_dtype if cfg.dtype == "run" else cfg.dtype, device)
    path = resolve_checkpoint(cfg.path)
    local = Path(path).is_dir()
    adapter_dir = None
    base = path
    quantization = cfg.quantization
    if local and (Path(path) / "adapter_config.json").is_file():
        adapter_dir = path
        meta = _read_json(Path(path) / META_FILE) if (Path(path) / META_FILE).is_file() else {}
        base = meta.get("base") or _read_json(Path(path) / "adapter_config.json").get("base_model_name_or_path")
        if not base:
            raise UserError(f"model.path: {path} is a LoRA adapter but names no base model")
        base = resolve_checkpoint(base, key=f"{path}: base model")
        if quantization == "none":
            quantization = meta.get("quantization", "none")

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    saved = _saved_quantization(base)
    if saved:
        quantization = saved  # the checkpoint carries its own quantization_config
        kwargs["device_map"] = {"": device}
    elif quantization != "none":
        from transformers import BitsAndBytesConfig

        if quantization == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=True)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device}
    model = _from_pretrained(AutoModelForCausalLM, base, "model", **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    else:
        _keep_cpu_4bit_layout(model)
    tok_source = cfg.tokenizer or (adapter_dir if adapter_dir else base)
    tokenizer = _from_pretrained(AutoTokenizer, tok_source, "tokenizer", trust_remote_code=cfg.trust_remote_code)

    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    elif cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
    elif quantization != "none":
        model.requires_grad_(False)  # quantised full weights are not trainable; use LoRA
    base_name = str(Path(base).resolve()) if Path(base).is_dir() else base
    return TextPolicy(model, tokenizer, chat_template=cfg.chat_template, max_prompt_tokens=cfg.max_prompt_tokens,
                      truncation=cfg.truncation, reference_mode=cfg.reference, base=base_name,
                      quantization=quantization)


def load_policy(cfg: ModelConfig | str | Path, *, run_device: str = "auto", run_dtype: str = "auto",
                **overrides: Any) -> TextPolicy:
    """Load a policy from a ``model:`` config or a checkpoint path (``overrides`` set config fields)."""
    if not isinstance(cfg, ModelConfig):
        if isinstance(overrides.get("lora"), dict):
            overrides["lora"] = LoraConfig(**overrides["lora"])
        cfg = ModelConfig(path=str(cfg), **overrides)
    elif overrides:
        raise TypeError("pass overrides only with a path")
    if Path(cfg.path).is_dir():
        from mmalign.multimodal.loading import checkpoint_kind, load_multimodal_policy

        quiet_hf_progress()

        if checkpoint_kind(cfg.path) != "text":
            device = run_device if cfg.device == "run" else cfg.device
            dtype = run_dtype if cfg.dtype == "run" else cfg.dtype
            return load_multimodal_policy(
                cfg.path, device=device, dtype=dtype, lora=cfg.lora if cfg.lora.enabled else None,
                chat_template=cfg.chat_template, max_prompt_tokens=cfg.max_prompt_tokens,
                truncation=cfg.truncation, reference_mode=cfg.reference)
    return load_text_policy(cfg, run_device=run_device, run_dtype=run_dtype)
