"""The language model with media adapters attached: one ``nn.Module`` that the text policy's
sampler and scorer drive exactly like a causal LM.

Its ``forward`` takes ``input_ids`` in which every media item is a run of placeholder ids.
On a full-sequence pass (no cache yet: a prefill or a scoring pass) it embeds the ids and
scatters the projected media features into the placeholder positions (LLaVA-style
``masked_scatter``), then runs the LM on ``inputs_embeds``; decode steps are plain token steps.
The features for the pass are set by the policy with :meth:`MultimodalLM.media_features`
(computed once per prompt, then indexed per row). Placeholder ids get a very low logit, so they
are never sampled and sampling and scoring see the same distribution.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from mmalign.errors import DataError
from mmalign.models.adapters import MediaAdapter


class MultimodalLM(nn.Module):
    """``lm`` (a HF causal LM or native VLM) + named :class:`MediaAdapter` modules."""

    def __init__(self, lm: nn.Module, adapters: dict[str, MediaAdapter], token_ids: dict[str, int],
                 pad_id: int) -> None:
        super().__init__()
        self.lm = lm
        self.adapters = nn.ModuleDict(adapters)
        self.token_ids = dict(token_ids)  # media kind -> placeholder token id
        self.pad_id = int(pad_id)
        self._features: dict[str, list[torch.Tensor]] | None = None
        self.register_buffer("_media_ids", torch.tensor(sorted(self.token_ids.values()), dtype=torch.long),
                             persistent=False)

    # what the sampler and the text policy read from a causal LM
    @property
    def config(self):
        return self.lm.config

    @property
    def generation_config(self):
        return getattr(self.lm, "generation_config", None)

    def disable_adapter(self):
        return self.lm.disable_adapter()

    def adapter_for(self, kind: str) -> MediaAdapter | None:
        for adapter in self.adapters.values():
            if kind in adapter.kinds:
                return adapter
        return None

    @contextlib.contextmanager
    def media_features(self, features: dict[str, list[torch.Tensor]]) -> Iterator[None]:
        """Use ``features[kind][row]`` (``[tokens, width]``, in placeholder order) for the
        full-sequence passes inside the block."""
        previous = self._features
        self._features = features
        try:
            yield
        finally:
            self._features = previous

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with media features scattered into placeholder positions."""
        is_media = torch.isin(input_ids, self._media_ids)
        embeds = self.lm.get_input_embeddings()(input_ids.masked_fill(is_media, self.pad_id))
        if not bool(is_media.any()):
            return embeds
        features = self._features or {}
        for kind, tid in self.token_ids.items():
            mask = input_ids == tid
            want = int(mask.sum())
            if not want:
                continue
            rows = features.get(kind) or []
            for r in range(input_ids.shape[0]):
                have = rows[r].shape[0] if r < len(rows) else 0
                need = int(mask[r].sum())
                if have != need:
                    raise DataError(f"row {r}: {need} {kind} placeholder tokens but {have} {kind} feature "
                                    f"vectors (a placeholder in a response, or a truncated prompt?)")
            feats = torch.cat([rows[r] for r in range(input_ids.shape[0])]).to(embeds.dtype)
            embeds = embeds.masked_scatter(mask[..., None], feats)
        return embeds

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                cache=None, **kwargs):
        if inputs_embeds is None:
            full = cache is None or cache.get_seq_length() == 0
            if full:
                inputs_embeds = self.embed(input_ids)
            else:
                safe = input_ids.masked_fill(torch.isin(input_ids, self._media_ids), self.pad_id)
                inputs_embeds = self.lm.get_input_embeddings()(safe)
        if cache is not None:
            kwargs["cache"] = cache
        out = self.lm(inputs_embeds=inputs_embeds, **kwargs)
        low = torch.finfo(out.logits.dtype).min / 2
        out.logits = out.logits.index_fill(-1, self._media_ids.to(out.logits.device), low)
        return out
