"""The small text align config the recipe tests share: toy model, bundled prompts, 2 prompts x 2
samples per step. Each test sets only what it is about (KL, training, checkpoints, extras)."""

from __future__ import annotations

from pathlib import Path


def write_align_config(tmp_path: Path, model: Path, name: str, *, kl: str = "{beta: 0.1}",
                       train: str = "{steps: 6, lr: 1.0e-3}", extra: str = "") -> Path:
    """Write ``<tmp_path>/<name>.yaml`` (run ``name`` under ``tmp_path/runs``) and return its path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""recipe: align
run: {{name: {name}, output_dir: {tmp_path / 'runs'}, seed: 3, device: cpu, dtype: float32}}
model: {{path: {model}}}
reward: {{kind: bundled_text}}
data: {{path: "bundled:text/prompts_train", max_rows: 8}}
calibration: {{num_samples: 4, batch_prompts: 8}}
transform: {{name: identity}}
rollout: {{prompts_per_step: 2, n: 2, max_new_tokens: 4}}
kl: {kl}
train: {train}
{extra}""")
    return path
