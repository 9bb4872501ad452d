"""``mmalign align --resume`` past a corrupt newest checkpoint: the recipe-side half of the shared
format's fallback (sft, distill and reward have theirs in tests/recipes/)."""

from __future__ import annotations

from pathlib import Path

from mmalign.training import checkpoint as ckpt
from tests.recipes.align_configs import write_align_config
from tests.training.helpers import assert_same_weights, corrupt


def _config(tmp_path: Path, model: Path) -> str:
    return str(write_align_config(tmp_path, model, "a",
                                  train="{steps: 6, lr: 1.0e-3, schedule: linear, warmup_steps: 2}",
                                  extra="checkpoint: {every: 2, keep: 3}\n"))


def test_align_resume_skips_a_corrupt_newest_checkpoint_and_ends_the_same(tmp_path, tiny_llama_dir, run_cli):
    cfg = _config(tmp_path, tiny_llama_dir)
    assert run_cli("align", cfg, "-q")[0] == 0
    run = tmp_path / "runs" / "a"
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [2, 4, 6]
    (tmp_path / "straight.safetensors").write_bytes((run / "final" / "model.safetensors").read_bytes())
    (run / "DONE").unlink()
    corrupt(run / "checkpoints" / "step-00000006" / "rng.pt")
    code, out, err = run_cli("align", cfg, "--resume")
    assert code == 0, err
    assert "warning: checkpoint step-00000006 is corrupt or partial (rng.pt does not match its sha256" in out
    assert "resuming after step 4" in (run / "run.log").read_text()
    assert_same_weights(run / "final" / "model.safetensors", tmp_path / "straight.safetensors")
