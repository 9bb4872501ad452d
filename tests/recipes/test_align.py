"""``mmalign align`` end to end on a toy LM: resume after SIGKILL, NaN rewards, two processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmalign.training import checkpoint as ckpt
from tests.recipes.align_configs import write_align_config

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, model: Path, name: str, extra: str = "") -> Path:
    return write_align_config(tmp_path, model, name,
                              kl="{beta: 0.1, controller: adaptive, target: 0.5, horizon: 100}",
                              train="{steps: 6, lr: 1.0e-3, epochs: 2, minibatches: 2}",
                              extra="checkpoint: {every: 2, keep: 2}\n" + extra)


def _final(tmp_path: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(tmp_path / "runs" / name / "final" / "model.safetensors"))


def _metrics(tmp_path: Path, name: str) -> list[dict]:
    text = (tmp_path / "runs" / name / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_align_writes_metrics_checkpoints_and_final_model(tmp_path, tiny_llama_dir, run_cli):
    code, out, err = run_cli("align", str(_config(tmp_path, tiny_llama_dir, "basic")), "-q")
    assert code == 0, err
    rows = _metrics(tmp_path, "basic")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("reward_raw", "reward_calibrated", "reward_transformed", "kl", "entropy", "response_length", "beta",
                "time_generate", "time_reward", "time_logprob", "time_update"):
        assert key in rows[-1], key
    assert 0.0 <= rows[-1]["reward_calibrated"] <= 1.0
    run = tmp_path / "runs" / "basic"
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [4, 6]
    assert ckpt.verify(run / "checkpoints" / "step-00000006") is None
    assert (run / "DONE").exists() and (run / "calibration.safetensors").exists()
    assert "steps" in out


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, tiny_llama_dir, run_cli):
    fn = tmp_path / "length.py"
    fn.write_text("def reward(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    extra = f"reward: {{kind: python, function: '{fn}:reward'}}\ntrain: {{steps: 8, lr: 1.0e-3, epochs: 2, minibatches: 2}}"
    cfg = _config(tmp_path, tiny_llama_dir, "resumed", extra)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "mmalign", "align", str(cfg), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckdir = tmp_path / "runs" / "resumed" / "checkpoints"
    deadline = time.time() + 300
    try:
        while not (ckdir / "step-00000004" / ckpt.MANIFEST).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the run made no checkpoint at step 4 in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (tmp_path / "runs" / "resumed" / "DONE").exists()
    code, _, err = run_cli("align", str(cfg), "--resume", "-q")
    assert code == 0, err
    rows = _metrics(tmp_path, "resumed")
    assert [r["step"] for r in rows] == list(range(1, 9))  # metrics past the checkpoint were replaced

    straight = _config(tmp_path, tiny_llama_dir, "straight", extra)
    code, _, err = run_cli("align", str(straight), "-q")
    assert code == 0, err
    a, b = _final(tmp_path, "resumed"), _final(tmp_path, "straight")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], load_file(str(tiny_llama_dir / "model.safetensors"))[k]) for k in a)


def test_nan_reward_stops_with_one_line_and_keeps_checkpoint(tmp_path, tiny_llama_dir, run_cli):
    fn = tmp_path / "flaky.py"
    # call 1 is calibration (one batch); calls 2.. are steps 1..; step 3 returns NaN
    fn.write_text("CALLS = [0]\n\ndef reward(prompts, responses):\n    CALLS[0] += 1\n"
                  "    return [float('nan') if CALLS[0] == 4 else float(len(r)) for r in responses]\n")
    cfg = _config(tmp_path, tiny_llama_dir, "nan", f"reward: {{kind: python, function: '{fn}:reward'}}")
    code, out, err = run_cli("align", str(cfg), "-q")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "step 3" in lines[0] and "nan" in lines[0] and "prompt 'Human:" in lines[0], err
    run = tmp_path / "runs" / "nan"
    found = ckpt.latest_valid(run / "checkpoints")
    assert found is not None and found.step == 2 and ckpt.verify(found.path) is None
    assert not (run / "DONE").exists()


def test_a_reward_that_raises_names_the_reward_and_the_prompt(tmp_path, tiny_llama_dir, run_cli):
    fn = tmp_path / "broken.py"
    fn.write_text("CALLS = [0]\n\ndef reward(prompts, responses):\n    CALLS[0] += 1\n"
                  "    if CALLS[0] == 3:\n        raise ValueError('judge unavailable')\n"
                  "    return [float(len(r)) for r in responses]\n")
    cfg = _config(tmp_path, tiny_llama_dir, "raises", f"reward: {{kind: python, function: '{fn}:reward'}}")
    code, _, err = run_cli("align", str(cfg), "-q")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"mmalign: error: step 2: reward '{fn}:reward' raised ValueError: judge unavailable")
    assert "the batch starts with prompt 'Human:" in lines[0]
    assert not (tmp_path / "runs" / "raises" / "DONE").exists()


def test_divergence_stops_with_one_line_and_keeps_a_finite_checkpoint(tmp_path, tiny_llama_dir, run_cli):
    code, _, err = run_cli("align", str(_config(tmp_path, tiny_llama_dir, "diverged")), "train.lr=1e9",
                             "checkpoint.every=1", "-q")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "align: training diverged at step " in lines[0], err
    assert "lower train.lr (now 1e+09)" in lines[0] and "Traceback" not in err
    failed_at = int(lines[0].split("at step ")[1].split(":")[0])
    run = tmp_path / "runs" / "diverged"
    assert not (run / "DONE").exists() and not (run / "final").exists()
    found = ckpt.latest_valid(run / "checkpoints")
    assert found is not None and found.step == failed_at - 1 and ckpt.verify(found.path) is None
    assert all(bool(torch.isfinite(t).all()) for t in found.tensors().values())
    assert max(r["step"] for r in _metrics(tmp_path, "diverged")) == failed_at - 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(cfg: Path, *args: str, popen: bool = False):
    """``mmalign align CFG ARGS`` under ``accelerate launch`` with two CPU processes (gloo)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "mmalign", "align", str(cfg), *args, "-q"]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (torch's launcher starts the ranks as its
    children; killing the launcher alone would leave them running), and wait until all are gone."""
    import psutil  # an accelerate dependency

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)


def test_two_processes_keep_parameters_in_sync(tmp_path, tiny_llama_dir):
    fn = tmp_path / "length.py"
    fn.write_text("def reward(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    cfg = _config(tmp_path, tiny_llama_dir, "ddp", f"reward: {{kind: python, function: '{fn}:reward'}}\n"
                  "train: {steps: 3, lr: 1.0e-2, check_sync: true}")
    res = _launch_two(cfg)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _metrics(tmp_path, "ddp")
    assert [r["step"] for r in rows] == [1, 2, 3]  # one set of metrics, from the main process
    for r in rows:
        a, b = r["param_checksums"]
        assert a == b, r
    first, last = rows[0]["param_checksums"][0], rows[-1]["param_checksums"][0]
    assert first != last


@pytest.mark.slow
def test_two_process_run_killed_and_resumed_through_the_cli_matches_an_uninterrupted_one(tmp_path, tiny_llama_dir):
    """SIGKILL to the whole launch (both ranks and the launcher) after the step-4 checkpoint;
    ``--resume`` under a new launch ends with the weights of a two-process run never stopped."""
    fn = tmp_path / "length.py"
    fn.write_text("def reward(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    extra = f"reward: {{kind: python, function: '{fn}:reward'}}\ntrain: {{steps: 8, lr: 1.0e-3, epochs: 2, minibatches: 2}}"
    cfg = _config(tmp_path, tiny_llama_dir, "ddp-resumed", extra)
    proc = _launch_two(cfg, popen=True)
    ckdir = tmp_path / "runs" / "ddp-resumed" / "checkpoints"
    deadline = time.time() + 600
    try:
        while not (ckdir / "step-00000004" / ckpt.MANIFEST).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the launch made no checkpoint at step 4 in time"
            time.sleep(0.05)
        _kill_tree(proc.pid)  # as a preemption would: the launcher and both ranks at once
    finally:
        proc.wait()
    assert not (tmp_path / "runs" / "ddp-resumed" / "DONE").exists()
    res = _launch_two(cfg, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in _metrics(tmp_path, "ddp-resumed")] == list(range(1, 9))

    res = _launch_two(_config(tmp_path, tiny_llama_dir, "ddp-straight", extra))
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _final(tmp_path, "ddp-resumed"), _final(tmp_path, "ddp-straight")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], load_file(str(tiny_llama_dir / "model.safetensors"))[k]) for k in a)


def test_bond_without_beta_starts_at_the_tilt_whose_kl_is_the_target():
    """kl.beta: null for BOND: (N-1)·log c at beta is the log tilt at beta/(N-1), so the recipe
    solves the log tilt's beta for kl.target and scales it by N-1."""
    from mmalign.align import beta_for_kl, get_transform, kl_divergence
    from mmalign.config import load_config
    from mmalign.config.schemas.align import AlignConfig
    from mmalign.recipes.align import choose_transform

    repo = Path(__file__).resolve().parents[2]
    for target in (0.25, 1.0):
        cfg = load_config(repo / "configs/reproduce/bond.yaml", AlignConfig, [f"kl.target={target}"])
        phi, beta = choose_transform(cfg)
        assert phi is None and beta == pytest.approx(3 * beta_for_kl(get_transform("log"), target))
        assert kl_divergence(get_transform("log"), beta / 3) == pytest.approx(target, rel=1e-3)


def test_raw_reward_without_beta_starts_at_the_identity_beta_scaled_to_its_spread(tmp_path, tiny_llama_dir, run_cli):
    """kl.beta: null for the raw reward: the recipe draws the K reference samples anyway and starts
    beta at sqrt(12) x (mean per-prompt standard deviation of the raw reward) x the identity
    tilt's beta at kl.target (exact if the raw reward were an affine map of c with one scale)."""
    from mmalign.align import beta_for_kl, get_transform

    cfg = write_align_config(tmp_path, tiny_llama_dir, "raw_null",
                             kl="{beta: null, controller: adaptive, target: 0.5, warmup_steps: 5}",
                             train="{steps: 2, lr: 1.0e-3}")
    cfg.write_text(cfg.read_text().replace("{name: identity}", "{name: raw}")
                   .replace("{kind: bundled_text}", "{kind: bundled_style}"))  # a reward that varies
    code, _, err = run_cli("align", str(cfg), "-q")
    assert code == 0, err
    store = load_file(str(tmp_path / "runs" / "raw_null" / "calibration.safetensors"))
    offsets, values = store["offsets"].tolist(), store["values"]
    per_prompt = [values[a:b] for a, b in zip(offsets, offsets[1:])]
    assert len(per_prompt) == 8 and all(len(v) == 4 for v in per_prompt)
    spread = float(torch.stack([v.std(unbiased=False) for v in per_prompt]).mean())
    assert spread > 0
    expected = 12 ** 0.5 * spread * beta_for_kl(get_transform("identity"), 0.5)
    assert _metrics(tmp_path, "raw_null")[0]["beta"] == pytest.approx(expected, rel=1e-5)


def test_adam_eps_reaches_the_optimizer_and_a_bad_one_is_one_line(tmp_path, tiny_llama_dir, run_cli):
    cfg = write_align_config(tmp_path, tiny_llama_dir, "eps", train="{steps: 2, lr: 1.0e-3, adam_eps: 1.0e-5}",
                             extra="checkpoint: {every: 2, keep: 1}\n")
    code, _, err = run_cli("align", str(cfg), "-q")
    assert code == 0, err
    state = torch.load(tmp_path / "runs/eps/checkpoints/step-00000002/optimizer.pt", weights_only=True)
    assert [g["eps"] for g in state["param_groups"]] == [1.0e-5]
    code, _, err = run_cli("align", str(cfg), "train.adam_eps=0", "--overwrite", "-q")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "train.adam_eps" in lines[0] and "Traceback" not in err, err


def test_align_plots_its_curves_and_summarises_first_and_last_tenth(tmp_path, tiny_llama_dir, run_cli):
    cfg = _config(tmp_path, tiny_llama_dir, "curves")
    code, out, err = run_cli("align", str(cfg), "train.steps=20", "-q")
    assert code == 0, err
    png = tmp_path / "runs" / "curves" / "plots" / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kl = [r["kl"] for r in _metrics(tmp_path, "curves")]
    assert len(kl) == 20
    first, last = sum(kl[:2]) / 2, sum(kl[-2:]) / 2  # a tenth of 20 steps is 2
    line = next(x for x in out.splitlines() if x.strip().startswith("kl:"))
    assert line.split(":", 1)[1].split()[0] == f"{first:.4g}" and f"-> {last:.4g} ±" in line, out
    assert "first -> last tenth" in out and str(png) in out


def test_the_calibration_store_follows_the_reference_weights_not_their_path(tmp_path, tiny_llama_dir, run_cli):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    def reference_fingerprint(model: Path, name: str) -> str:
        cfg = write_align_config(tmp_path, model, name, train="{steps: 1, lr: 1.0e-3}")
        code, _, err = run_cli("align", str(cfg), f"calibration.store={store}", "-q")
        assert code == 0, err
        with safe_open(str(store), framework="pt") as fh:
            return fh.metadata()["policy_fingerprint"]

    store = tmp_path / "calibration.safetensors"
    first, moved = tmp_path / "ref", tmp_path / "elsewhere" / "ref"
    shutil.copytree(tiny_llama_dir, first)
    original = reference_fingerprint(first, "a")
    shutil.copytree(first, moved)  # the same model at another path keeps the store
    assert reference_fingerprint(moved, "b") == original
    weights = load_file(str(first / "model.safetensors"))  # trained again in place: a new model
    name = next(iter(weights))
    weights[name] = weights[name] * 1.01
    save_file(weights, str(first / "model.safetensors"), metadata={"format": "pt"})
    assert reference_fingerprint(first, "c") != original
