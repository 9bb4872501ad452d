"""``export_checkpoint``: one export (GGUF / ONNX / bitsandbytes) plus its verification report.

Everything is written to a temporary sibling of ``out`` that is renamed into place only when the
export and its verification finished, so a failed export leaves nothing behind. An export whose
parity misses the floor of its quant (:data:`mmalign.export.verify.THRESHOLDS`) raises
:class:`ParityError` and leaves nothing either, unless ``keep_low_parity``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mmalign import __version__
from mmalign.edge.manifest import MANIFEST_NAME, Manifest
from mmalign.errors import UserError
from mmalign.export.bnb_export import BNB_QUANTS
from mmalign.export.gguf_export import QUANTS as GGUF_QUANTS
from mmalign.export.onnx_quant import INT8_COMPUTE, ONNX_QUANTS
from mmalign.export.prompts import EVAL_COUNT, EVAL_TOKENS, encode_prompts, load_prompts
from mmalign.export.report import write_report
from mmalign.export.source import Checkpoint, open_checkpoint
from mmalign.export.tokenizer_meta import special_token_ids
from mmalign.export.verify import THRESHOLDS, below_threshold
from mmalign.utils.atomic import atomic_directory, atomic_write_text
from mmalign.utils.progress import echo

FORMATS: dict[str, tuple[str, ...]] = {"gguf": GGUF_QUANTS, "onnx": ONNX_QUANTS, "bnb": BNB_QUANTS}
DEFAULT_QUANT = {"gguf": "q8_0", "onnx": "int8", "bnb": "nf4"}


class ParityError(UserError):
    """The export's parity is below the documented floor of its quant; nothing was written."""

    exit_code = 3

    def __init__(self, fmt: str, quant: str, why: str) -> None:
        self.fmt, self.quant, self.why = fmt, quant, why
        super().__init__(f"{fmt} {quant} export fails its parity check ({why}); nothing written "
                         "(pass --keep-low-parity to keep it anyway)")


def check_format(fmt: str, quant: str | None) -> str:
    """Validate ``--format``/``--quant``; returns the quant (the format's default if None)."""
    if fmt not in FORMATS:
        raise UserError(f"--format '{fmt}' is not supported (choose from {', '.join(FORMATS)})")
    quant = quant or DEFAULT_QUANT[fmt]
    if quant not in FORMATS[fmt]:
        raise UserError(f"--quant '{quant}' is not valid for --format {fmt} (choose from {', '.join(FORMATS[fmt])})")
    return quant


def _manifest(ckpt: Checkpoint, fmt: str, quant: str, model_file: str) -> Manifest:
    c = ckpt.config
    vocab = json.loads((ckpt.path / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    special = special_token_ids(ckpt.path, vocab)
    eos = c.get("eos_token_id", special.get("eos"))
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    heads = int(c.get("num_attention_heads", 1))
    return Manifest(format=fmt, quant=quant, model_file=model_file,
                    num_layers=int(c.get("num_hidden_layers", 0)),
                    num_kv_heads=int(c.get("num_key_value_heads") or heads),
                    head_dim=int(c.get("head_dim") or int(c.get("hidden_size", 0)) // heads),
                    vocab_size=int(c.get("vocab_size", 0)), bos_token_id=special.get("bos"),
                    eos_token_ids=eos_ids, pad_token_id=special.get("pad"),
                    source=str(ckpt.merged_from_adapter or ckpt.path), mmalign_version=__version__)


def _export_onnx(model: Any, quant: str, out: Path, int8_compute: str) -> str:
    from mmalign.export.onnx_export import decoder_onnx_model, export_decoder_onnx
    from mmalign.export.onnx_quant import quantize_int4, quantize_int8

    if quant == "fp32":
        export_decoder_onnx(model, out / "model.onnx")
    elif quant == "int8":  # quantize the graph in memory: no fp32 copy written and read back
        quantize_int8(decoder_onnx_model(model), out / "model.onnx", compute=int8_compute)
    else:
        quantize_int4(decoder_onnx_model(model), out / "model.onnx")
    return "model.onnx"


def _export_gguf(model: Any, ckpt: Checkpoint, quant: str, out: Path) -> str:
    from mmalign.export.gguf_export import write_gguf
    from mmalign.export.tokenizer_meta import read_tokenizer_meta

    tok = read_tokenizer_meta(ckpt.path)
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    name = f"model-{quant}.gguf"
    write_gguf(state, ckpt.config, tok, out / name, quant, name=(ckpt.merged_from_adapter or ckpt.path).name)
    return name


def _exported_policy(fmt: str, quant: str, out: Path) -> tuple[Any, str]:
    """The export at ``out`` as a policy, through the factory (ONNX: onnxruntime; GGUF: llama.cpp
    when installed, else the NumPy runner), and the runtime's name for the report."""
    if fmt == "bnb":
        from mmalign.export.bnb_export import load_bnb

        return _source_policy(load_bnb(out), out), f"pytorch-bnb-{quant}"
    from mmalign.models.loading import load_policy

    policy = load_policy(out)
    return policy, f"{policy.runtime_name}-{quant}"


def _source_policy(model: Any, tokenizer_dir: Path) -> Any:
    """A loaded Hugging Face model (and the tokenizer next to it) as a frozen TextPolicy."""
    from transformers import AutoTokenizer

    from mmalign.models.text import TextPolicy
    from mmalign.utils.io_errors import reading

    with reading(tokenizer_dir, "--checkpoint", what="tokenizer", broad=True):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return TextPolicy(model, tokenizer).freeze()


def _model_files(fmt: str, out: Path, manifest: Manifest) -> dict[str, int]:
    if fmt == "bnb":
        paths = sorted(out.glob("*.safetensors"))
    else:
        paths = [out / manifest.model_file, *sorted(out.glob(manifest.model_file + ".data"))]
    return {p.name: p.stat().st_size for p in paths if p.is_file()}


def export_checkpoint(checkpoint: str | Path, fmt: str, quant: str | None, out: str | Path, *,
                      overwrite: bool = False, eval_prompts: str | Path | None = None,
                      eval_count: int = EVAL_COUNT, eval_tokens: int = EVAL_TOKENS, verify: bool = True,
                      greedy_count: int | None = None, chat_template: str = "auto",
                      keep_low_parity: bool = False, int8_compute: str = "int8") -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` and verify it; returns the export report (also written to ``out``).

    Verification: ``eval_count`` prompts (chat-templated if the tokenizer has a template and
    ``chat_template`` is not ``off``), ``eval_tokens`` greedy reference tokens each, teacher-forced
    KL / top-1 on all, free-running greedy agreement on the first ``greedy_count`` (None: all).
    Parity below the quant's floor raises :class:`ParityError` unless ``keep_low_parity``.
    ``int8_compute`` (ONNX int8 only): ``int8`` (per-block int8 activations, fast) or ``fp32``.
    """
    quant = check_format(fmt, quant)
    if int8_compute not in INT8_COMPUTE:
        raise UserError(f"--int8-compute must be {' or '.join(INT8_COMPUTE)} (got '{int8_compute}')")
    if int8_compute != "int8" and (fmt, quant) != ("onnx", "int8"):
        raise UserError(f"--int8-compute {int8_compute} applies to --format onnx --quant int8 only "
                        f"(got --format {fmt} --quant {quant})")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise UserError(f"{out}: output directory exists; pass --overwrite to replace it")
    if eval_tokens < 1:
        raise UserError(f"--eval-tokens must be >= 1 (got {eval_tokens})")
    if chat_template not in ("auto", "on", "off"):
        raise UserError(f"--chat-template must be auto, on or off (got '{chat_template}')")
    if greedy_count is not None and greedy_count < 0:
        raise UserError(f"--greedy-prompts must be >= 0 (got {greedy_count})")
    if verify:
        load_prompts(eval_prompts, eval_count)  # a bad prompts file fails before the slow export
    with open_checkpoint(checkpoint, require_llama=fmt != "bnb") as ckpt:
        prompt_ids = _prompt_ids(ckpt, eval_prompts, eval_count, chat_template) if verify else []
        echo(f"loading {ckpt.path}")
        model = ckpt.load_model()
        num_params = sum(p.numel() for p in model.parameters())
        with atomic_directory(out, overwrite=True) as tmp:
            echo(f"exporting {fmt} {quant} -> {out}")
            if fmt == "onnx":
                model_file = _export_onnx(model, quant, tmp, int8_compute)
            elif fmt == "gguf":
                model_file = _export_gguf(model, ckpt, quant, tmp)
            else:
                from mmalign.export.bnb_export import save_bnb

                save_bnb(ckpt.path, quant, tmp)
                model_file = ""
            ckpt.copy_tokenizer_files(tmp)
            manifest = _manifest(ckpt, fmt, quant, model_file)
            atomic_write_text(tmp / MANIFEST_NAME, manifest.to_json())
            files = _model_files(fmt, tmp, manifest)
            size = sum(files.values())
            report: dict[str, Any] = {
                "format": fmt, "quant": quant, "source": manifest.source, "files": files, "size_bytes": size,
                "num_parameters": num_params, "fp32_bytes": 4 * num_params,
                "size_ratio_vs_fp32": size / (4 * num_params), "source_weights_bytes": ckpt.weights_bytes(),
                "parity": None,
            }
            if (fmt, quant) == ("onnx", "int8"):
                report["int8_compute"] = int8_compute
            if verify:
                echo(f"verifying on {len(prompt_ids)} prompts x {eval_tokens} tokens")
                start = time.perf_counter()
                report["parity"] = _verify(_source_policy(model, ckpt.path), fmt, quant, tmp, manifest, prompt_ids,
                                           eval_tokens, greedy_count)
                report["verify_seconds"] = round(time.perf_counter() - start, 1)
                why = below_threshold(report["parity"], quant)
                min_top1, max_kl = THRESHOLDS.get(quant, (None, None))
                report["parity_floor"] = {"teacher_forced_agreement_min": min_top1, "mean_kl_max": max_kl,
                                          "passed": why is None, "why": why}
                if why and not keep_low_parity:
                    raise ParityError(fmt, quant, why)
            write_report(tmp, report)
            _make_readable(tmp)
    return report


def _make_readable(directory: Path) -> None:
    """Temp dirs/files are created private (0700/0600); exports are for sharing: honour the umask."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _prompt_ids(ckpt: Checkpoint, eval_prompts: str | Path | None, eval_count: int,
                chat_template: str) -> list[list[int]]:
    from transformers import AutoTokenizer

    from mmalign.export.prompts import uses_chat_template
    from mmalign.utils.io_errors import reading

    with reading(ckpt.path, "--checkpoint", what="tokenizer", broad=True):
        tok = AutoTokenizer.from_pretrained(str(ckpt.path))
    chat = uses_chat_template(tok, chat_template)
    return encode_prompts(tok, load_prompts(eval_prompts, eval_count, chat=chat), chat=chat)


def _verify(source: Any, fmt: str, quant: str, out: Path, manifest: Manifest, prompt_ids: list[list[int]],
            eval_tokens: int, greedy_count: int | None) -> dict[str, Any]:
    from mmalign.export.verify import measure_parity

    exported, name = _exported_policy(fmt, quant, out)
    return measure_parity(source, exported, prompt_ids, eval_tokens, manifest.eos_token_ids, greedy_count,
                          names=("pytorch-fp32", name)).as_dict()
