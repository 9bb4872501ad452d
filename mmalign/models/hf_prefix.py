"""The :class:`~mmalign.models.continuations.PrefixRuntime` of a Hugging Face causal LM.

The prefix runs once into a ``DynamicCache``; each batch of suffixes (right-padded, so no
attention mask is needed) runs on that cache expanded to the batch without a copy. Caches with
other layer types (sliding windows, quantised caches) are not reused: :meth:`prefix` returns None
and those rows run in full.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3}  # other dtypes: 5e-2


class HFPrefixRuntime:
    """Forward passes of ``model`` (a ``PreTrainedModel``, or a peft model around one) for
    :func:`~mmalign.models.continuations.score_continuations`; call it under ``torch.no_grad``."""

    def __init__(self, model: Any, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
        first = next(model.parameters())
        self.device = first.device
        self.tolerance = _TOLERANCE.get(getattr(model, "dtype", first.dtype), 5e-2)

    def prefix(self, ids: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if type(cache) is not DynamicCache or not all(type(layer) is DynamicLayer for layer in cache.layers):
            return None
        return [(layer.keys, layer.values) for layer in cache.layers]

    def forward(self, suffixes: list[tuple[int, ...]], need: list[int],
                state: list[tuple[torch.Tensor, torch.Tensor]] | None) -> list[torch.Tensor]:
        from transformers import DynamicCache

        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(suffixes):
            ids[i, :len(s)] = torch.tensor(s)
        kwargs: dict[str, Any] = {"input_ids": ids.to(self.device), "use_cache": state is not None}
        if self._keep_arg:
            kwargs["logits_to_keep"] = max(width - (len(s) - n) for s, n in zip(suffixes, need))
        if state is not None:
            b = len(suffixes)
            kwargs[self._cache_arg] = DynamicCache(
                ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in state])
        logits = self.model(**kwargs).logits
        offset = width - logits.shape[1]
        return [torch.log_softmax(logits[i, len(s) - n - offset:len(s) - offset], dim=-1)
                for i, (s, n) in enumerate(zip(suffixes, need))]
