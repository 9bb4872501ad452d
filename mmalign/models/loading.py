"""Load a policy from a ``model:`` config (or a checkpoint path): the one factory every verb uses.

A checkpoint is a local directory written by ``save_pretrained`` / :meth:`TextPolicy.save` (full
weights, or a peft adapter whose ``mmalign_policy.json`` / ``adapter_config.json`` names its base),
a hub id (from the local cache without network when it is there; an uncached id fails in seconds
when the hub cannot be used, :mod:`mmalign.models.hub`) or a ``.gguf`` file (de-quantised on load,
:mod:`mmalign.models.gguf_source`). An adapter's base is looked up relative to the adapter first
(:func:`adapter_base`), so a run tree that moved still loads. A path that looks local but is
missing, a folder that is no checkpoint and a checkpoint whose files are corrupt are one-line user errors naming the config key and the
file (:mod:`mmalign.utils.io_errors`). ``key`` is the config section the model came from
(``model``, ``teacher``, ``reference``, ...), so an error names ``reference.path`` or
``model.tokenizer`` rather than always ``model.path``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmalign.config.schemas.model import LoraConfig, ModelConfig
from mmalign.errors import UserError
from mmalign.models.exported import export_directory, load_exported_policy
from mmalign.models.gguf_source import is_gguf_file, load_gguf_model, load_gguf_tokenizer
from mmalign.models.hub import check_hub_id
from mmalign.models.policy import TrainablePolicy
from mmalign.models.text import META_FILE, TextPolicy
from mmalign.utils.device import resolve_device, resolve_dtype
from mmalign.utils.io_errors import check_model_dir, check_tokenizer_dir, reading


def resolve_checkpoint(path: str, key: str = "model.path") -> str:
    """A local checkpoint directory (as a string) or a hub id; raise if a local-looking path is missing."""
    p = Path(path).expanduser()
    if p.is_dir():
        return str(p)
    if p.exists():
        if p.suffix.lower() == ".gguf":
            return str(p)  # a GGUF file, de-quantised on load (mmalign.models.gguf_source)
        raise UserError(f"{key}: {path} is a file, expected a checkpoint directory or a .gguf file")
    if path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path or path.endswith("/"):
        raise UserError(f"{key}: checkpoint directory not found: {path}")
    return path


def _read_json(path: Path, key: str | None = None) -> dict[str, Any]:
    with reading(path, key):
        data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise UserError(f"{key + ': ' if key else ''}{path}: expected a JSON object")
    return data


def _from_pretrained(loader: Any, name: str, what: str, key: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(name)``; a bad local folder or file is one line naming ``key`` and
    the file (any exception of the loader on the user's files counts: they come in many types)."""
    (check_tokenizer_dir if what == "tokenizer" else check_model_dir)(name, key)
    with reading(name, key, what=what, broad=True):
        return loader.from_pretrained(name, **kwargs)


def adapter_base(adapter_dir: Path, meta: dict[str, Any], key: str) -> str:
    """The base checkpoint of a LoRA adapter: ``base_relative`` (recorded relative to the adapter, so
    a run tree moved as a whole still loads), then the recorded ``base`` (absolute path or hub id),
    then peft's ``base_model_name_or_path``; one line naming what was tried when none is there."""
    recorded = meta.get("base") or _read_json(adapter_dir / "adapter_config.json", key).get("base_model_name_or_path")
    relative = meta.get("base_relative")
    if relative and (adapter_dir / relative).exists():
        return str((adapter_dir / relative).resolve())
    if not recorded:
        raise UserError(f"{key}: {adapter_dir} is a LoRA adapter but names no base model")
    if Path(recorded).expanduser().exists():
        return resolve_checkpoint(recorded, key=f"{key}: base model")
    looks_local = Path(recorded).is_absolute() or recorded.startswith((".", "~")) or recorded.count("/") > 1
    if looks_local or relative:
        tried = f"{recorded}" + (f" or {relative} relative to the adapter" if relative else "")
        raise UserError(f"{key}: the base model of LoRA adapter {adapter_dir} is not found (recorded as {tried}); "
                        f"put the base back there or set 'base' in {adapter_dir / META_FILE}")
    return recorded  # a hub id


def _saved_quantization(base: str, key: str) -> str | None:
    """"4bit"/"8bit" when a local checkpoint was saved already quantised, else None."""
    config = Path(base) / "config.json"
    if not config.is_file():
        return None
    q = _read_json(config, key).get("quantization_config")
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


def load_text_policy(cfg: ModelConfig, *, run_device: str = "auto", run_dtype: str = "auto",
                     key: str = "model") -> TextPolicy:
    """Build a :class:`TextPolicy` from a ``model:`` section (``run`` device/dtype fill ``"run"``);
    ``key`` is the section's name in the config, for error messages."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_hf_progress()
    device = resolve_device(run_device if cfg.device == "run" else cfg.device)
    dtype = resolve_dtype(run_dtype if cfg.dtype == "run" else cfg.dtype, device)
    path_key = f"{key}.path"
    path = resolve_checkpoint(cfg.path, key=path_key)
    local = Path(path).is_dir()
    adapter_dir = None
    base = path
    quantization = cfg.quantization
    if local and (Path(path) / "adapter_config.json").is_file():
        adapter_dir = path
        meta = _read_json(Path(path) / META_FILE, path_key) if (Path(path) / META_FILE).is_file() else {}
        base = adapter_base(Path(path), meta, path_key)
        if quantization == "none":
            quantization = meta.get("quantization", "none")

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    saved = _saved_quantization(base, path_key)
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
    gguf = is_gguf_file(base)
    if not gguf and not Path(base).is_dir() and check_hub_id(base, path_key):
        kwargs["local_files_only"] = True  # a cached hub id: no network
    if gguf:
        if quantization != "none":
            raise UserError(f"{path_key}: quantization '{quantization}' of a GGUF file is not supported; convert "
                            "it first (python -m mmalign.models.gguf_source convert FILE DIR) and load DIR")
        model = load_gguf_model(base, dtype=dtype, key=path_key)
    else:
        model = _from_pretrained(AutoModelForCausalLM, base, "model", path_key, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    else:
        _keep_cpu_4bit_layout(model)
    tok_source = cfg.tokenizer or (adapter_dir if adapter_dir else base)
    tok_key = f"{key}.tokenizer" if cfg.tokenizer else path_key
    if cfg.tokenizer:
        tok_source = resolve_checkpoint(cfg.tokenizer, key=tok_key)
    if is_gguf_file(tok_source):
        tokenizer = load_gguf_tokenizer(tok_source, key=tok_key)
    else:
        tok_kwargs: dict[str, Any] = {}
        if not Path(tok_source).is_dir() and check_hub_id(tok_source, tok_key):
            tok_kwargs["local_files_only"] = True
        tokenizer = _from_pretrained(AutoTokenizer, tok_source, "tokenizer", tok_key,
                                     trust_remote_code=cfg.trust_remote_code, **tok_kwargs)

    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter_dir is not None:
        from peft import PeftModel

        with reading(adapter_dir, path_key, what="LoRA adapter", broad=True):
            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    elif cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
    elif quantization != "none":
        model.requires_grad_(False)  # quantised full weights are not trainable; use LoRA
    base_name = str(Path(base).resolve()) if Path(base).exists() else base
    return TextPolicy(model, tokenizer, chat_template=cfg.chat_template, max_prompt_tokens=cfg.max_prompt_tokens,
                      truncation=cfg.truncation, reference_mode=cfg.reference, base=base_name,
                      quantization=quantization)


def load_media_policy(cfg: ModelConfig, *, run_device: str = "auto", run_dtype: str = "auto",
                      key: str = "model") -> TextPolicy:
    """A ``multimodal`` (our media adapters) or ``native_vlm`` (a HF VLM) checkpoint directory."""
    from mmalign.models.multimodal_loading import load_multimodal_policy

    device = run_device if cfg.device == "run" else cfg.device
    dtype = run_dtype if cfg.dtype == "run" else cfg.dtype
    return load_multimodal_policy(
        cfg.path, device=device, dtype=dtype, lora=cfg.lora if cfg.lora.enabled else None,
        chat_template=cfg.chat_template, max_prompt_tokens=cfg.max_prompt_tokens,
        truncation=cfg.truncation, reference_mode=cfg.reference, key=f"{key}.path")


# The checkpoint's recorded kind (``mmalign_policy.json``'s ``kind``, or what its config.json says)
# -> the loader of that adapter. A new adapter family registers its kind here.
POLICY_LOADERS: dict[str, Callable[..., TrainablePolicy]] = {
    "text": load_text_policy,
    "multimodal": load_media_policy,
    "native_vlm": load_media_policy,
    "exported": load_exported_policy,  # an ONNX / GGUF `mmalign export` directory: score and sample only
}


def policy_kind(path: str, key: str = "model.path") -> str:
    """The kind of the checkpoint at ``path``: ``exported`` for an ONNX / GGUF export (directory or
    ``.onnx``), what a local directory records, else ``text`` (a hub id or a GGUF file)."""
    if export_directory(path) is not None:
        return "exported"
    if not Path(path).is_dir():
        return "text"
    from mmalign.models.multimodal_loading import checkpoint_kind

    return checkpoint_kind(path, key=key)


def load_policy(cfg: ModelConfig | str | Path, *, run_device: str = "auto", run_dtype: str = "auto",
                key: str = "model", **overrides: Any) -> TrainablePolicy:
    """Load a policy from a ``model:`` config or a checkpoint path (``overrides`` set config fields),
    with the loader :data:`POLICY_LOADERS` registers for the checkpoint's kind; ``key`` names the
    config section in error messages. Any registered kind comes back: a text or multimodal policy,
    or an exported model (which refuses the training hooks in one line)."""
    if not isinstance(cfg, ModelConfig):
        if isinstance(overrides.get("lora"), dict):
            overrides["lora"] = LoraConfig(**overrides["lora"])
        cfg = ModelConfig(path=str(cfg), **overrides)
    elif overrides:
        raise TypeError("pass overrides only with a path")
    quiet_hf_progress()
    kind = policy_kind(cfg.path, key=f"{key}.path")
    return POLICY_LOADERS[kind](cfg, run_device=run_device, run_dtype=run_dtype, key=key)
