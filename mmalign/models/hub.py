"""Hub ids as ``model.path``: use the local Hugging Face cache when it has the model, and when it
does not, fail in seconds with one line instead of letting the download retry for a minute.

- cached (``config.json`` of the id is in the cache): load from the cache, no network;
- not cached and ``HF_HUB_OFFLINE=1``: a one-line error saying the id is not cached;
- not cached and the hub's endpoint cannot be reached within :data:`PROBE_TIMEOUT_S` (no network, a
  firewall): a one-line error with the ``HF_HUB_OFFLINE`` hint;
- otherwise transformers downloads it as usual.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from mmalign.errors import UserError

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_cached(repo_id: str, filename: str = "config.json") -> bool:
    """True if ``filename`` of ``repo_id`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
        return False
    return isinstance(found, str)


def endpoint_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to the hub endpoint (``HF_ENDPOINT``) opens within ``timeout`` seconds."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:  # no route, DNS failure, refused, timed out (and the test suite's network guard)
        return False


def check_hub_id(repo_id: str, key: str = "model.path") -> bool:
    """Decide how to load the hub id ``repo_id``: True = from the cache only (no network), False =
    download; raise a one-line :class:`UserError` when it can be neither."""
    if is_cached(repo_id):
        return True
    if hub_offline():
        raise UserError(f"{key}: '{repo_id}' is not a local directory and not in the Hugging Face cache, "
                        "and HF_HUB_OFFLINE is set; download it once with network access "
                        "(huggingface-cli download ID) or point the key at a local directory")
    if not endpoint_reachable():
        raise UserError(f"{key}: '{repo_id}' is not a local directory or in the Hugging Face cache, and the hub "
                        f"cannot be reached (no network?); point the key at a local directory, or set "
                        f"HF_HUB_OFFLINE=1 to use only cached models")
    return False
