"""Text tiers as models: the transformers config of a text tier and a randomly initialised
checkpoint of it (at full or toy width), with a tokenizer trained on the spot or shared."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mmalign.errors import UserError
from mmalign.zoo.tiers import Tier, scale_architecture


def text_model_config(tier: Tier, *, vocab_size: int, width_scale: float = 1.0, num_layers: int | None = None,
                      context_length: int | None = None, bos_token_id: int | None = None,
                      eos_token_id: int | None = None, pad_token_id: int | None = None):
    """The transformers config of a text tier (at ``width_scale``)."""
    from transformers import LlamaConfig

    if tier.family != "text":
        raise UserError(f"tier '{tier.full_name}' is not a text tier")
    arch = scale_architecture(tier.architecture, width_scale, num_layers)
    if arch.get("type", "llama") != "llama":
        raise UserError(f"{tier.source}: architecture type '{arch.get('type')}' is not supported (use llama)")
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=arch["hidden_size"], intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"], num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_kv_heads"],
        max_position_embeddings=context_length or arch.get("context_length", 4096),
        rope_theta=float(arch.get("rope_theta", 10000.0)), rms_norm_eps=float(arch.get("rms_norm_eps", 1e-5)),
        tie_word_embeddings=bool(arch.get("tie_word_embeddings", False)),
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)


def init_text_checkpoint(tier: Tier, out_dir: str | Path, texts: Iterable[str] | None = None, *,
                         vocab_size: int = 512, width_scale: float = 1.0, num_layers: int | None = None,
                         context_length: int | None = None, tokenizer_dir: str | Path | None = None,
                         seed: int = 0) -> Path:
    """Write a randomly initialised checkpoint of ``tier`` plus a tokenizer (trained on ``texts``,
    or reused from ``tokenizer_dir`` so that several tiers share one vocabulary)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from mmalign.models.toy import DEFAULT_CHAT_TEMPLATE, SAMPLE_TEXT, train_bpe_tokenizer

    out = Path(out_dir)
    if tokenizer_dir is not None:
        from mmalign.utils.io_errors import check_tokenizer_dir, reading

        check_tokenizer_dir(tokenizer_dir, "--tokenizer")
        with reading(tokenizer_dir, "--tokenizer", what="tokenizer", broad=True):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        tokenizer = train_bpe_tokenizer(list(texts) if texts is not None else SAMPLE_TEXT * 20,
                                        vocab_size=vocab_size, chat_template=DEFAULT_CHAT_TEMPLATE)
    config = text_model_config(tier, vocab_size=len(tokenizer), width_scale=width_scale, num_layers=num_layers,
                               context_length=context_length, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
