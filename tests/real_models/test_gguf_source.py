"""GGUF files as a model source: the errors a user can cause, and a conversion that is done once."""

from __future__ import annotations

import pytest

from mmalign.errors import UserError
from tests.cli.errors import one_line


def test_a_file_named_gguf_that_is_not_gguf_is_one_line(tmp_path, run_cli):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf file")
    config = tmp_path / "decode.yaml"
    config.write_text(f"""recipe: decode
run: {{name: d, output_dir: {tmp_path / 'runs'}, seed: 0, device: cpu, dtype: float32}}
model: {{path: {fake}}}
data: {{path: "bundled:text/prompts_eval", max_rows: 2}}
decode: {{method: sample, n: 2, max_new_tokens: 2, batch_size: 2}}
""")
    code, _, err = run_cli("-q", "decode", str(config))
    one_line(code, err, "model.path: ", f"{fake} is not a GGUF file")


def test_any_other_file_is_refused_as_model_path(tmp_path):
    from mmalign.models.loading import load_policy

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(UserError, match="is a file, expected a checkpoint directory or a .gguf file"):
        load_policy(str(weights))


@pytest.mark.real_model
def test_a_conversion_is_kept_until_the_gguf_changes(smollm2_dir, tmp_path):
    from mmalign.models import gguf_source, smollm2

    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert smollm2.build_hf_dir(smollm2_dir) == smollm2_dir  # up to date: nothing rewritten
    assert weights.stat().st_mtime_ns == before
    assert gguf_source.is_converted(smollm2_dir, smollm2.gguf_path())

    other = tmp_path / "other.gguf"  # another file (a different mtime): not this conversion
    other.write_bytes(smollm2.gguf_path().read_bytes()[:4096])
    assert not gguf_source.is_converted(smollm2_dir, other)

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a conversion of a GGUF file"):
        smollm2.build_hf_dir(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
