"""Benchmark: best-of-16 sampling, prefix-shared vs ``generate(num_return_sequences=16)``.

Shape: 32 prompts of 256 tokens, 16 samples each, 32 new tokens, on a Pro-tier model at toy width
(``--width-scale``, ``--layers``). Both paths sample at temperature 1 with no top-k / top-p and never
stop early (EOS off), so they produce the same amount of work except for the prefill:
``num_return_sequences`` expands the prompts to 512 rows *before* encoding them, the prefix-shared
sampler encodes the 32 prompts once and expands their KV cache.

    python scripts/bench/bon_decode.py [--prompts 32] [--prompt-len 256] [--n 16] [--new 32]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def build_model(width_scale: float, layers: int, vocab: int, seed: int):
    from transformers import LlamaForCausalLM

    from mmalign.zoo import get_tier, text_model_config

    config = text_model_config(get_tier("pro"), vocab_size=vocab, width_scale=width_scale, num_layers=layers,
                               context_length=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval(), config


def shared_prefix(model, ids: torch.Tensor, n: int, new: int) -> torch.Tensor:
    from mmalign.models.sampler import sample_shared_prefix

    mask = torch.ones_like(ids)
    out = sample_shared_prefix(model, {"input_ids": ids}, mask, n=n, max_new_tokens=new, eos_ids=set(), pad_id=0)
    return out.tokens


@torch.no_grad()
def hf_generate(model, ids: torch.Tensor, n: int, new: int) -> torch.Tensor:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, num_return_sequences=n,
                         max_new_tokens=new, min_new_tokens=new, temperature=1.0, top_k=0, top_p=1.0,
                         pad_token_id=0)
    return out[:, ids.shape[1]:]


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--width-scale", type=float, default=0.125)  # Pro at 1/8 width: hidden 512
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = build_model(args.width_scale, args.layers, args.vocab, seed=0)
    ids = torch.randint(3, args.vocab, (args.prompts, args.prompt_len), generator=torch.Generator().manual_seed(0))
    print(f"model: Pro tier at width {args.width_scale} -> hidden {config.hidden_size}, {config.num_hidden_layers} "
          f"layers, {config.num_attention_heads}/{config.num_key_value_heads} heads, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params")
    print(f"shape: {args.prompts} prompts x {args.prompt_len} tokens, best-of-{args.n}, {args.new} new tokens; "
          f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}")
    # warm-up on a small slice so both paths start with loaded kernels
    shared_prefix(model, ids[:2, :32], 2, 2)
    hf_generate(model, ids[:2, :32], 2, 2)
    t_shared, a = timed(shared_prefix, model, ids, args.n, args.new)
    t_hf, b = timed(hf_generate, model, ids, args.n, args.new)
    assert a.shape == b.shape == (args.prompts * args.n, args.new), (a.shape, b.shape)
    print(f"prefix-shared sampler     : {t_shared:8.2f} s")
    print(f"generate(num_return_seq.) : {t_hf:8.2f} s")
    print(f"speed-up                  : {t_hf / t_shared:8.2f}x")


if __name__ == "__main__":
    main()
