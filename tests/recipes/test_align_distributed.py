"""``mmalign align`` beyond one process, on CPU: FSDP (what accelerate refuses here, and the FSDP2
pieces the recipe relies on, run under torch's ``fully_shard`` over gloo) and a multimodal policy
under DDP. The text policy under DDP is ``test_align.py::test_two_processes_keep_parameters_in_sync``.
What runs where: docs/scaling.md.

Run as a script (``python -m torch.distributed.run --nproc_per_node 2 THIS MODEL OUT``) it is the
FSDP2 worker of :func:`test_fsdp2_samples_trains_checkpoints_and_resumes_on_two_cpu_processes`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.models.multimodal.toy_policy import save_toy_media_policy
from tests.recipes.align_configs import write_align_config

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")


def _launch(tmp_path: Path, cfg: Path, *launch_args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--main_process_port", str(_free_port()),
           "-m", "mmalign", "align", str(cfg), "-q"]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# FSDP through the real CLI: accelerate runs CPU processes as DDP, so the recipe refuses
# ---------------------------------------------------------------------------------------------
FSDP_CPU = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
machine_rank: 0
main_training_function: main
mixed_precision: "no"
use_cpu: true
rdzv_backend: static
same_network: true
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_cpu_ram_efficient_loading: false
  fsdp_offload_params: false
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
"""


def _text_config(tmp_path: Path, model: Path, name: str) -> Path:
    return write_align_config(tmp_path, model, name, train="{steps: 2, lr: 1.0e-2}")


def test_an_fsdp_launch_on_cpu_is_refused_instead_of_running_as_ddp(tmp_path, tiny_llama_dir):
    """accelerate turns an FSDP config into DistributedType.FSDP only on accelerators; CPU
    processes stay MULTI_CPU (plain DDP over gloo). The recipe says so instead of training
    replicated weights while the user believes them sharded."""
    (tmp_path / "fsdp_cpu.yaml").write_text(FSDP_CPU)
    res = _launch(tmp_path, _text_config(tmp_path, tiny_llama_dir, "fsdp"), "--config_file", "fsdp_cpu.yaml")
    assert res.returncode != 0, res.stdout[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("mmalign: error:")]
    assert errors and len(set(errors)) == 1, res.stderr[-3000:]
    assert "asks for FSDP but accelerate runs MULTI_CPU" in errors[0]
    assert "Traceback" not in res.stderr.split("mmalign: error:")[0]  # refused before any work, not crashed
    assert not (tmp_path / "runs" / "fsdp").exists()


# ---------------------------------------------------------------------------------------------
# FSDP2 on two CPU processes, sharded as accelerate shards a causal LM
# ---------------------------------------------------------------------------------------------
def test_fsdp2_samples_trains_checkpoints_and_resumes_on_two_cpu_processes(tmp_path, tiny_llama_dir):
    """The FSDP2 pieces align relies on under torch's ``fully_shard`` (per decoder layer, then the
    root, as accelerate's FSDP2 preparation does) on 2 gloo processes: the policy's sampling with
    gathered parameters, three optimiser steps, the training kernel's checkpoint
    (``full_state`` / ``save_training``) and resume (``restore_training``), the final weights."""
    out = tmp_path / "fsdp2"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(Path(__file__).resolve()), str(tiny_llama_dir), str(out)]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))

    # generation: different prompts and lengths per process (different numbers of forwards) ran
    # on the gathered weights, token for token what the unsharded model samples; afterwards the
    # parameters are shards again and a forward reshards them as configured
    for r in (r0, r1):
        assert r["same_samples_as_unsharded"] and r["sharded_after_sampling"] and r["resharded_after_forward"], r
    assert r0["sample_shape"] != r1["sample_shape"]

    # training: one model (the full weights each process gathers are the same), which moved, and
    # which is what one process training on both processes' batches reaches
    assert r0["checksums"] == r1["checksums"] and r0["checksums"][0] != r0["checksums"][-1]
    assert r0["max_diff_to_single_process"] < 1e-5, r0

    # the checkpoint (step 2) and the final weights (step 3) hold full tensors, written once
    from safetensors.torch import load_file

    from mmalign.models.loading import load_policy
    from mmalign.training import checkpoint as ckpt

    found = ckpt.latest_valid(out / "checkpoints")
    assert found is not None and found.step == 2 and ckpt.verify(found.path) is None
    plain = load_policy(tiny_llama_dir, device="cpu", dtype="float32")
    shapes = [tuple(p.shape) for p in plain.trainable_parameters()]
    saved = found.tensors()
    assert [tuple(saved[f"policy.{i}"].shape) for i in range(len(shapes))] == shapes
    assert abs(sum(float(t.double().sum()) for t in saved.values()) - r0["checksums"][1]) < 1e-6
    final = load_file(str(out / "final" / "model.safetensors"))
    start = load_file(str(Path(tiny_llama_dir) / "model.safetensors"))
    assert final.keys() == start.keys()
    assert abs(sum(float(t.double().sum()) for t in final.values()) - r0["checksums"][2]) < 1e-6
    assert any(not final[k].equal(start[k]) for k in final)

    # resume: a fresh sharded model restored from step 2 takes step 3 bit for bit as the run did
    assert r0["resume_bit_exact"] and r1["resume_bit_exact"]


def _fsdp2_worker(model_dir: str, out: Path) -> None:
    """One process of the FSDP2 test (see the test for what it checks)."""
    import copy

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from mmalign.models.loading import load_policy
    from mmalign.training import checkpoint as ckpt
    from mmalign.training.fsdp import full_tensors

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    prompts = {0: ["Tell me a story", "What is two plus two"], 1: ["Hi", "Name a colour"]}

    def sharded_policy():
        policy = load_policy(model_dir, device="cpu", dtype="float32")
        plain = copy.deepcopy(policy)
        for layer in policy.model.model.layers:
            fully_shard(layer)
        fully_shard(policy.model)
        return policy, plain

    def training_of(policy) -> dict:
        """What the checkpoint keeps (the kernel's ``save_training`` / ``restore_training`` keywords)."""
        params = policy.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return {"groups": {"policy": params}, "optimizer": opt, "scheduler": sched}

    def step(policy, training: dict, k: int, batch_prompts: dict[int, list[str]]) -> None:
        ranks = list(batch_prompts)  # the batches whose mean loss this process optimises
        losses = [-policy.score(policy.encode(batch_prompts[r], [f" a b {k}{r}"] * 2)).sum(1).mean() for r in ranks]
        (sum(losses) / len(losses)).backward()
        torch.nn.utils.clip_grad_norm_(training["groups"]["policy"], 1.0)
        training["optimizer"].step()
        training["optimizer"].zero_grad()
        training["scheduler"].step()

    def full_params(training: dict) -> list[torch.Tensor]:
        return full_tensors(training["groups"]["policy"])

    def checksum(training: dict) -> float:
        return sum(float(t.double().sum()) for t in full_params(training))

    result: dict = {}
    policy, plain = sharded_policy()
    training = training_of(policy)  # as the recipe: the parameters right after sharding, before any forward
    layers = policy.model.model.layers

    # sampling: rank-specific prompts and lengths, against the unsharded copy
    kwargs = {"n": 2, "max_new_tokens": 3 + 6 * rank}
    s = policy.sample(prompts[rank], generator=torch.Generator().manual_seed(5), **kwargs)
    s_plain = plain.sample(prompts[rank], generator=torch.Generator().manual_seed(5), **kwargs)
    result["sample_shape"] = list(s.response_ids.shape)
    result["same_samples_as_unsharded"] = (torch.equal(s.response_ids, s_plain.response_ids)
                                           and torch.allclose(s.logprobs, s_plain.logprobs, atol=1e-6))
    result["sharded_after_sampling"] = all(isinstance(p, DTensor) for p in layers.parameters())
    with torch.no_grad():
        policy.score(policy.encode(prompts[rank], [" x"] * 2))
    result["resharded_after_forward"] = all(isinstance(p, DTensor) for p in layers.parameters())

    # three steps, each process on its own batch; a checkpoint after step 2, the final weights after 3
    sums = []
    for k in range(3):
        step(policy, training, k, {rank: prompts[rank]})
        sums.append(checksum(training))
        if k == 1:
            groups, optimizer = ckpt.full_state(training["groups"], training["optimizer"])
            if rank == 0:
                ckpt.save_training(out / "checkpoints", 2, groups=groups, optimizer=optimizer,
                                   scheduler=training["scheduler"], keep=2)
            dist.barrier()
    result["checksums"] = sums
    want = [t.clone() for t in full_params(training)]
    policy.save(out / "final")  # every process: FSDP2 gathers, rank 0 writes

    # one process, both batches per step, the same three steps
    if rank == 0:
        single = training_of(plain)
        for k in range(3):
            step(plain, single, k, prompts)
        result["max_diff_to_single_process"] = max(float((a - b).abs().max())
                                                   for a, b in zip(want, single["groups"]["policy"]))

    # resume from step 2 into a fresh sharded model, then step 3
    fresh, _ = sharded_policy()
    resumed = training_of(fresh)
    ckpt.restore_training(ckpt.latest_valid(out / "checkpoints"), **resumed)
    step(fresh, resumed, 2, {rank: prompts[rank]})
    result["resume_bit_exact"] = all(torch.equal(a, b) for a, b in zip(want, full_params(resumed)))

    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# a multimodal policy under DDP
# ---------------------------------------------------------------------------------------------




@pytest.mark.slow
def test_a_multimodal_policy_trains_under_ddp_on_two_processes(tmp_path):
    """Scoring inside ``through_prepared`` forwards through the DDP wrapper while the media hooks
    (placeholder ids, adapters, features) come from the unwrapped model: both processes keep one
    set of weights, and the image projector learns through the wrapped forward. The prompts have
    images only, so the audio projector gets no gradient (DDP is told to expect unused ones)."""
    from PIL import Image
    from safetensors.torch import load_file

    model = save_toy_media_policy(tmp_path / "policy")
    rows = []
    for i, (name, rgb) in enumerate([("red", (220, 30, 30)), ("blue", (30, 30, 220))] * 2):
        Image.new("RGB", (32, 32), rgb).save(tmp_path / f"{name}.png")
        rows.append({"prompt": f"<image> Which colour is picture {i}?", "images": [str(tmp_path / f"{name}.png")]})
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "reward.py").write_text("def reward(prompts, responses):\n"
                                        "    return [sum(map(ord, r)) / max(1, len(r)) for r in responses]\n")
    cfg = tmp_path / "mm.yaml"
    cfg.write_text(f"""recipe: align
run: {{name: mm, output_dir: {tmp_path / 'runs'}, seed: 0, device: cpu, dtype: float32}}
model: {{path: {model}}}
reward: {{kind: python, function: '{tmp_path / 'reward.py'}:reward'}}
data: {{path: {tmp_path / 'prompts.jsonl'}}}
calibration: {{num_samples: 8, batch_prompts: 8}}
transform: {{name: log, procedure: bon, n: 4}}
rollout: {{prompts_per_step: 2, n: 4, max_new_tokens: 4}}
kl: {{estimator: k1, mode: reward, beta: 0.05, controller: fixed}}
train: {{steps: 2, lr: 1.0e-3, max_grad_norm: 1.0, check_sync: true}}
""")
    res = _launch(tmp_path, cfg, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                  "--dynamo_backend", "no")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _metrics(tmp_path / "runs" / "mm")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        a, b = r["param_checksums"]
        assert a == b, r
    assert rows[0]["param_checksums"] != rows[-1]["param_checksums"]
    before = load_file(str(model / "media_adapters.safetensors"))
    after = load_file(str(tmp_path / "runs" / "mm" / "final" / "media_adapters.safetensors"))
    assert any(not before[k].equal(after[k]) for k in before if k.startswith("vision.projector."))
    for frozen in ("vision.tower.", "audio."):  # encoders are frozen; no audio prompt reached the projector
        assert all(before[k].equal(after[k]) for k in before if k.startswith(frozen)), frozen


if __name__ == "__main__":
    _fsdp2_worker(sys.argv[1], Path(sys.argv[2]))
