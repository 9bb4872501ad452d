"""Edge speed benchmark at the Nano shape: tokens/s and size on disk per runtime.

Builds a Nano-shaped Llama locally (random weights; hidden 512, 8 layers, 8 heads / 4 KV heads,
FFN 1536, vocab 8192: ~34M parameters), then times greedy generation (batch 1, KV cache, fixed
length) for PyTorch eager fp32 (HF ``generate``), ONNX fp32 / int8 / int4 through the torch-free
edge runner and, when llama-cpp-python is installed, GGUF Q8_0 / Q4_0. Runtimes are timed in
alternation (round-robin over prompts) so background load hits them alike. Prints a markdown
table with ratios against PyTorch.

    python scripts/bench/edge_speed.py [--prompts 4] [--new-tokens 64] [--rounds 2] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

NANO = dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4, intermediate_size=1536, max_position=2048)
VOCAB = 8192
PROMPTS = ["Human: What is the capital of France?\n\nAssistant:", "The quick brown fox jumps over",
           "Best-of-N sampling draws N responses and", "1 2 3 4 5 6 7 8 9 10 red green blue",
           "Alignment makes a model helpful,", "Human: Write a poem about the sea.\n\nAssistant:"]


def build_nano(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    from mmalign.models.toy import (
        DEFAULT_CHAT_TEMPLATE,
        SAMPLE_TEXT,
        tiny_llama_config,
        train_bpe_tokenizer,
    )

    tok = train_bpe_tokenizer(SAMPLE_TEXT * 20, vocab_size=1024, chat_template=DEFAULT_CHAT_TEMPLATE)
    cfg = tiny_llama_config(VOCAB, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, **NANO)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def torch_runner(ckpt: Path, n: int, threads: int) -> Callable[[list[int]], None]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()

    def run(ids: list[int]) -> None:
        with torch.no_grad():
            model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0)

    return run


def onnx_runner(export_dir: Path, n: int, threads: int) -> Callable[[list[int]], None]:
    from mmalign.edge import OnnxLM

    lm = OnnxLM(export_dir, threads=threads)
    return lambda ids: lm.generate_ids(ids, max_new_tokens=n, stop_at_eos=False)


def llamacpp_runner(gguf_path: Path, n: int, threads: int) -> Callable[[list[int]], None] | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(gguf_path), n_ctx=512, n_threads=threads, verbose=False)

    def run(ids: list[int]) -> None:
        llm.reset()
        for i, _tok in enumerate(llm.generate(ids, temp=0.0, top_k=1)):
            if i + 1 >= n:
                break

    return run


def interleaved_tokens_per_s(runners: dict[str, Callable[[list[int]], None] | None], prompt_ids: list[list[int]],
                             n: int, rounds: int) -> dict[str, float | None]:
    """Time every runner on every prompt, alternating runners, so background load hits all alike."""
    live = {k: r for k, r in runners.items() if r is not None}
    for run in live.values():
        run(prompt_ids[0])  # warm-up
    spent = dict.fromkeys(live, 0.0)
    for _ in range(rounds):
        for ids in prompt_ids:
            for name, run in live.items():
                start = time.perf_counter()
                run(ids)
                spent[name] += time.perf_counter() - start
    total = rounds * len(prompt_ids) * n
    return {k: (total / spent[k] if k in spent else None) for k in runners}


def export_all(ckpt: Path, work: Path) -> dict[str, Path]:
    """ONNX fp32 (exported once) + int8 / int4 quantized from it; GGUF Q8_0 / Q4_0. Returns dirs/files."""
    import shutil

    from mmalign.edge.manifest import MANIFEST_NAME
    from mmalign.export.api import export_checkpoint
    from mmalign.export.onnx_quant import quantize_int4, quantize_int8

    out: dict[str, Path] = {}
    fp32 = work / "onnx-fp32"
    if not (fp32 / MANIFEST_NAME).is_file():  # a reused --workdir keeps earlier exports
        export_checkpoint(ckpt, "onnx", "fp32", fp32, overwrite=True, verify=False)
    out["onnx fp32"] = fp32
    for quant, fn in (("int8", quantize_int8), ("int4", quantize_int4)):
        d = work / f"onnx-{quant}"
        out[f"onnx {quant}"] = d
        if (d / MANIFEST_NAME).is_file():
            continue
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for f in fp32.iterdir():
            if f.name not in ("model.onnx", MANIFEST_NAME):
                shutil.copy2(f, d / f.name)
        fn(fp32 / "model.onnx", d / "model.onnx")
        manifest = json.loads((fp32 / MANIFEST_NAME).read_text())
        manifest["quant"] = quant
        (d / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    for quant in ("q8_0", "q4_0"):
        d = work / f"gguf-{quant}"
        if not (d / MANIFEST_NAME).is_file():
            export_checkpoint(ckpt, "gguf", quant, d, overwrite=True, verify=False)
        out[f"gguf {quant}"] = d
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds over the prompts")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for every runtime (torch intra-op, onnxruntime intra-op, llama.cpp)")
    ap.add_argument("--workdir", default=None, help="keep the model and exports here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results as JSON")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from mmalign.utils.progress import set_quiet

    set_quiet(True)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="edge-bench-"))
    ckpt = work / "nano"
    if not (ckpt / "config.json").is_file():
        build_nano(ckpt)
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    prompt_ids = [tok.encode(p).ids for p in PROMPTS[: args.prompts]]
    n = args.new_tokens
    exports = export_all(ckpt, work)

    runners: dict[str, Callable[[list[int]], None] | None] = {"pytorch": torch_runner(ckpt, n, args.threads)}
    for name, path in exports.items():
        runners[name] = (onnx_runner(path, n, args.threads) if name.startswith("onnx")
                         else llamacpp_runner(sorted(path.glob("model*.gguf"))[0], n, args.threads))
    speed = interleaved_tokens_per_s(runners, prompt_ids, n, args.rounds)
    rows = [{"runtime": "pytorch eager fp32 (HF generate)",
             "bytes": sum(f.stat().st_size for f in ckpt.glob("*.safetensors")), "tok_s": speed["pytorch"]}]
    for name, path in exports.items():
        label = f"{name} (mmalign.edge, onnxruntime)" if name.startswith("onnx") else f"{name} (llama-cpp-python)"
        size = sum(f.stat().st_size for f in path.glob("model*") if f.suffix in (".onnx", ".data", ".gguf"))
        rows.append({"runtime": label, "bytes": size, "tok_s": speed[name]})
    base = rows[0]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "prompts": len(prompt_ids),
              "new_tokens": n, "threads": args.threads, "shape": {**NANO, "vocab_size": VOCAB},
              "rows": rows}
    print(f"Nano shape {NANO} vocab {VOCAB}; {len(prompt_ids)} prompts x {n} tokens x {args.rounds} rounds, "
          f"{args.threads} threads")
    header = "| runtime | size on disk | size vs fp32 | tokens/s | speed vs PyTorch |"
    print(header)
    print("|---|---|---|---|---|")
    for r in rows:
        tps = "n/a (llama-cpp-python not installed)" if r["tok_s"] is None else f"{r['tok_s']:.1f}"
        ratio = "—" if r["tok_s"] is None else f"{r['tok_s'] / base['tok_s']:.2f}×"
        print(f"| {r['runtime']} | {r['bytes'] / 2**20:.1f} MiB | {r['bytes'] / base['bytes']:.0%} | {tps} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
