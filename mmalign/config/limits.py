"""Sizes a run can never fit, refused while the config is validated (before any allocation).

One cap, :data:`MAX_BATCH_TOKENS`, bounds the tokens a single sampling call or training batch may
hold (rows x tokens per row). It is far above any batch that fits on one accelerator (a 2**24-token
batch of a 135M-parameter model already needs hundreds of GB of activations), so it only refuses
typos such as ``decode.n=100000000``, which would otherwise try to allocate hundreds of GB.
"""

from __future__ import annotations

import math

from mmalign.errors import ConfigError

MAX_BATCH_TOKENS = 1 << 24  # 16,777,216 tokens in one sampling call or training batch


def check_batch_tokens(what: str, **factors: int) -> None:
    """Refuse a ``what`` (e.g. "sampling call") of ``prod(factors)`` tokens above the cap.

    ``factors`` map config keys (dots written as ``__``) to their values; the error leads with the
    largest factor's key, the one most likely to be a typo.
    """
    total = math.prod(factors.values())
    if total <= MAX_BATCH_TOKENS:
        return
    keys = {k.replace("__", "."): v for k, v in factors.items()}
    lead = max(keys, key=lambda k: keys[k])
    shown = " x ".join(f"{k} ({v:,})" for k, v in keys.items())
    raise ConfigError(key=lead, problem=f"{shown} = {total:,} tokens in one {what}, above the limit of "
                      f"{MAX_BATCH_TOKENS:,} (mmalign.config.limits.MAX_BATCH_TOKENS); lower {lead}")
