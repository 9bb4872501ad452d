"""The model zoo: Nano / Pro / Ultra tiers as YAML inside the package (``specs/<family>/<tier>.yaml``,
as open_clip keeps ``model_configs/``) and one factory, :func:`build_tier`, that writes a randomly
initialised checkpoint of any tier (at full or toy width) which :func:`mmalign.models.loading.load_policy`
loads.

* :mod:`mmalign.zoo.tiers`: :class:`Tier`, :func:`list_tiers`, :func:`get_tier`, width scaling and
  parameter counts;
* :mod:`mmalign.zoo.text`: text tiers → transformers configs and checkpoints;
* :mod:`mmalign.zoo.media`: vision / audio / multimodal tiers → adapter specs and checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mmalign.zoo.media import (
    MEDIA_FAMILIES,
    audio_spec,
    init_media_checkpoint,
    media_parts,
    vision_spec,
)
from mmalign.zoo.text import init_text_checkpoint, text_model_config
from mmalign.zoo.tiers import (
    ENV_VAR,
    SPECS,
    Tier,
    estimate_params,
    get_tier,
    list_tiers,
    scale_architecture,
    zoo_root,
)

__all__ = ["ENV_VAR", "MEDIA_FAMILIES", "SPECS", "Tier", "audio_spec", "build_tier", "estimate_params",
           "get_tier", "init_media_checkpoint", "init_text_checkpoint", "list_tiers", "media_parts",
           "scale_architecture", "text_model_config", "vision_spec", "zoo_root"]


def build_tier(tier: Tier | str, out_dir: str | Path, *, texts: Iterable[str] | None = None,
               vocab_size: int = 512, width_scale: float = 1.0, num_layers: int | None = None,
               context_length: int | None = None, tokenizer_dir: str | Path | None = None,
               seed: int = 0) -> Path:
    """Write a randomly initialised checkpoint of ``tier`` (a :class:`Tier` or its name) to
    ``out_dir``: a text LM for a ``text`` tier, a media-adapter policy for a vision, audio or
    multimodal one (toy-sized encoders when ``width_scale < 1``). ``tokenizer_dir`` (reuse that
    tokenizer) applies to text tiers; media tiers train theirs with the media placeholders."""
    tier = get_tier(tier) if isinstance(tier, str) else tier
    if tier.family == "text":
        return init_text_checkpoint(tier, out_dir, texts, vocab_size=vocab_size, width_scale=width_scale,
                                    num_layers=num_layers, context_length=context_length,
                                    tokenizer_dir=tokenizer_dir, seed=seed)
    return init_media_checkpoint(tier, out_dir, texts=texts, vocab_size=vocab_size, width_scale=width_scale,
                                 num_layers=num_layers, context_length=context_length, seed=seed)
