"""The calibration store: reference rewards per prompt on disk, keyed by content, invalidated by
the fingerprints of the reference policy and the reward."""

from __future__ import annotations

import pytest
import torch

from mmalign.align import calibrate
from mmalign.errors import DataError
from mmalign.rl.calibration_store import CalibrationStore, prompt_key


def test_store_round_trip_and_fingerprint_invalidation(tmp_path):
    path = tmp_path / "calib" / "refs.safetensors"
    store = CalibrationStore(path, policy_fingerprint="ref-v1", reward_fingerprint="rm-v1")
    assert store.get("hello") is None
    store.put("hello", [0.5, 1.5, 1.5])
    store.put("hello", [0.25], media=[b"\x89PNG..."])
    store.save()
    assert path.exists() and not list(path.parent.glob(".*.tmp"))

    again = CalibrationStore(path, policy_fingerprint="ref-v1", reward_fingerprint="rm-v1")
    assert len(again) == 2
    torch.testing.assert_close(again.get("hello"), torch.tensor([0.5, 1.5, 1.5], dtype=torch.float64))
    torch.testing.assert_close(again.get("hello", media=[b"\x89PNG..."]), torch.tensor([0.25], dtype=torch.float64))
    found, missing = again.lookup(["hello", "other"])
    assert found[0] is not None and missing == [1]

    for policy, reward in [("ref-v2", "rm-v1"), ("ref-v1", "rm-v2")]:
        stale = CalibrationStore(path, policy_fingerprint=policy, reward_fingerprint=reward)
        assert stale.stale and stale.get("hello") is None and len(stale) == 0


def test_media_keys_hash_content_of_bytes_and_files(tmp_path):
    img = tmp_path / "img.bin"
    img.write_bytes(b"pixels")
    assert prompt_key("q", [img]) == prompt_key("q", [b"pixels"]) == prompt_key("q", [str(img)])
    assert prompt_key("q", [b"pixels"]) != prompt_key("q", [b"pixelz"])
    assert prompt_key("q") != prompt_key("q", [b""]) != prompt_key("r", [b""])
    with pytest.raises(DataError, match="cannot read media"):
        prompt_key("q", [tmp_path / "missing.png"])


def test_store_rejects_bad_values_and_bad_files(tmp_path):
    store = CalibrationStore(tmp_path / "s.safetensors", policy_fingerprint="a", reward_fingerprint="b")
    with pytest.raises(DataError, match="K = 0"):
        store.put("x", [])
    with pytest.raises(DataError, match="NaN or inf"):
        store.put("x", [1.0, float("nan")])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="bad.safetensors"):
        CalibrationStore(bad, policy_fingerprint="a", reward_fingerprint="b")


def test_store_feeds_calibrate(tmp_path):
    store = CalibrationStore(tmp_path / "s.safetensors", policy_fingerprint="a", reward_fingerprint="b")
    store.put("p0", [1.0, 2.0, 3.0])
    store.put("p1", [5.0])
    refs, missing = store.lookup(["p0", "p1"])
    assert missing == []
    out = calibrate(refs, [torch.tensor([2.0]), torch.tensor([4.0, 5.0])])
    assert out[0].tolist() == [0.5] and out[1].tolist() == [0.0, 0.5]
