"""Best-of-N sampling on an exported Nano: ``ExportedPolicy.sample`` against PyTorch, tokens/s.

Builds the Nano-shaped Llama of ``edge_speed.py`` (random weights, ~34M parameters), exports it
to ONNX (``--quant``, default int4), and times ``policy.sample(prompts, n=N)`` (temperature 1, EOS
ignored, fixed length) through the Policy interface, as ``mmalign decode`` and best-of-N call it:

* PyTorch: the checkpoint as a ``TextPolicy`` (eager fp32, prefix-shared KV cache), the peer;
* the export decoding one row at a time (what ``ExportedPolicy`` did before batched runtimes);
* the export decoding a prompt's N rows in one batched pass per token (today's path).

Runs are timed in alternation so background load hits them alike. Prints a markdown table with
ratios against PyTorch and against the row-at-a-time export.

    python scripts/bench/edge_bon.py [--n 8] [--prompts 4] [--new-tokens 32] [--rounds 2] [--quant int4]
        [--checkpoint DIR]   # a real checkpoint instead, e.g. python -m mmalign.models.smollm2 build DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_speed import NANO, PROMPTS, VOCAB, build_nano  # noqa: E402  (the same model and prompts)


def samplers(ckpt: Path, export: Path, n: int, new_tokens: int, threads: int) -> dict[str, Callable[[list[str]], None]]:
    import torch

    from mmalign.models.export_runtimes import OnnxRuntime
    from mmalign.models.loading import load_policy

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # onnxruntime's intra-op pool (OnnxLM threads=0)
    text = load_policy(ckpt, device="cpu", dtype="float32").freeze()
    batched = load_policy(export)
    one_row = load_policy(export)
    assert isinstance(one_row.runtime, OnnxRuntime)
    one_row.runtime.batched = False  # the row-at-a-time decode loop, same runtime and graph
    kwargs = dict(max_new_tokens=new_tokens, temperature=1.0, ignore_eos=True)

    def run(policy) -> Callable[[list[str]], None]:
        gen = torch.Generator().manual_seed(0)
        return lambda prompts: policy.sample(prompts, n, generator=gen, **kwargs)

    return {"pytorch": run(text), "export, one row at a time": run(one_row), "export, batched rows": run(batched)}


def interleaved_tokens_per_s(runners: dict[str, Callable[[list[str]], None]], prompts: list[str], tokens: int,
                             rounds: int) -> dict[str, float]:
    for run in runners.values():
        run(prompts[:1])  # warm-up
    spent = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for p in prompts:
            for name, run in runners.items():
                start = time.perf_counter()
                run([p])
                spent[name] += time.perf_counter() - start
    return {k: rounds * len(prompts) * tokens / spent[k] for k in runners}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (best-of-N's N)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quant", default="int4", choices=["fp32", "int8", "int4"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--checkpoint", default=None, help="time this checkpoint directory instead of the Nano shape")
    ap.add_argument("--workdir", default=None, help="keep the model and export here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results as JSON")
    args = ap.parse_args()

    from mmalign.edge.manifest import MANIFEST_NAME
    from mmalign.export.api import export_checkpoint
    from mmalign.utils.digest import weights_digest
    from mmalign.utils.progress import set_quiet

    set_quiet(True)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edge-bon-"))
    ckpt = Path(args.checkpoint) if args.checkpoint else work / "nano"
    if args.checkpoint and not (ckpt / "config.json").is_file():
        print(f"edge_bon.py: {ckpt}: no config.json (--checkpoint takes a Hugging Face model directory)",
              file=sys.stderr)
        raise SystemExit(2)
    if not (ckpt / "config.json").is_file():
        build_nano(ckpt)
    export = work / f"onnx-{args.quant}"
    stamp = work / f"onnx-{args.quant}.source"  # the digest of the checkpoint the export was made from
    digest = weights_digest(ckpt)
    fresh = (export / MANIFEST_NAME).is_file() and stamp.is_file() and stamp.read_text() == digest
    if not fresh:  # a --workdir reused with another --checkpoint must not time the old model's export
        export_checkpoint(ckpt, "onnx", args.quant, export, overwrite=True, verify=False)
        stamp.write_text(digest)
    prompts = PROMPTS[: args.prompts]
    runners = samplers(ckpt, export, args.n, args.new_tokens, args.threads)
    speed = interleaved_tokens_per_s(runners, prompts, args.n * args.new_tokens, args.rounds)
    base, rows = speed["pytorch"], speed["export, one row at a time"]
    shape = ckpt.name if args.checkpoint else f"Nano shape {NANO} vocab {VOCAB}"
    print(f"{shape}; ONNX {args.quant}; {len(prompts)} prompts x N = {args.n} x "
          f"{args.new_tokens} tokens x {args.rounds} rounds, {args.threads} threads")
    print("| sampler | tokens/s | vs PyTorch | vs one row at a time |")
    print("|---|---:|---:|---:|")
    for name, tps in speed.items():
        print(f"| {name} | {tps:.1f} | {tps / base:.2f}× | {tps / rows:.2f}× |")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                                               "n": args.n, "quant": args.quant, "threads": args.threads,
                                               "new_tokens": args.new_tokens, "tokens_per_s": speed}, indent=2))


if __name__ == "__main__":
    main()
