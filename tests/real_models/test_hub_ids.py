"""A hub id as ``model.path`` when the hub cannot be used: one line, exit 2, in seconds.

The suite's network guard (tests/netguard) makes the hub unreachable; the cache is an empty
directory, so the id is not cached. Nothing here reaches the network."""

from __future__ import annotations

import time

import pytest

from tests.cli.errors import one_line

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _decode_config(tmp_path, model: str) -> str:
    path = tmp_path / "decode.yaml"
    path.write_text(f"""recipe: decode
run: {{name: d, output_dir: {tmp_path / 'runs'}, seed: 0, device: cpu, dtype: float32}}
model: {{path: {model}}}
data: {{path: "bundled:text/prompts_eval", max_rows: 2}}
decode: {{method: sample, n: 2, max_new_tokens: 2, batch_size: 2}}
""")
    return str(path)


def test_an_uncached_hub_id_with_hf_hub_offline_is_one_line(tmp_path, run_cli, empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, HUB_ID))
    one_line(code, err, f"model.path: '{HUB_ID}'", "not in the Hugging Face cache", "HF_HUB_OFFLINE is set")
    assert time.perf_counter() - start < 10


def test_an_uncached_hub_id_without_network_fails_fast_with_the_offline_hint(tmp_path, run_cli, empty_hub_cache,
                                                                             monkeypatch):
    # as a user without network would run it: no offline variables, so mmalign must notice itself
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    start = time.perf_counter()
    code, _, err = run_cli("-q", "decode", _decode_config(tmp_path, HUB_ID))
    one_line(code, err, f"model.path: '{HUB_ID}'", "cannot be reached", "HF_HUB_OFFLINE=1")
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "runs" / "d" / "DONE").exists()


def test_a_cached_hub_id_loads_without_the_network(smollm2_dir, empty_hub_cache, monkeypatch):
    """A hub id whose files are in the cache loads from it, offline variables or not."""
    from mmalign.models.loading import load_policy

    snapshot = empty_hub_cache / "models--local--smollm2" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in smollm2_dir.iterdir():
        (snapshot / f.name).symlink_to(f)
    refs = empty_hub_cache / "models--local--smollm2" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    pol = load_policy("local/smollm2", device="cpu", dtype="float32")
    assert pol.uses_chat_template() and pol.base == "local/smollm2"
