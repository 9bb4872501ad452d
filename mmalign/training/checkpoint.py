"""The one checkpoint format of every training recipe (align, sft, distill, reward): written
atomically, verified by a manifest of hashes, rotated.

Layout of one checkpoint (``checkpoints/step-00000040/``)::

    trainable.safetensors   trainable tensors (full weights or the LoRA adapter; value head)
    optimizer.pt            optimizer state (loaded with ``weights_only=True``)
    rng.pt                  python / numpy / torch / CUDA / sampling-generator RNG states
    trainer.json            step, scheduler state and the recipe's extras (data position, KL controller)
    MANIFEST.json           sha256 and size of every file above; written last

The directory is assembled under a temporary name and renamed into place, so a crash leaves
either the complete checkpoint or nothing. A checkpoint whose manifest is missing or whose files
do not match it (disk corruption, a truncated copy) is reported and skipped in favour of the
previous one.

A recipe saves with :func:`save_training` and resumes with :func:`resume_point` (or
:func:`latest_valid`) then :func:`restore_training`; the model itself is rebuilt from the run's config, and the trainable
tensors are copied into it.

A model that FSDP2 sharded in place saves and resumes the same way: every process passes its
shards through :func:`full_state` (a collective) and the main process saves what it returns, the
checkpoint one process would write; :func:`restore_training` loads full tensors and each process
keeps its shards, optimizer moments included.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmalign.errors import FileError
from mmalign.training import fsdp
from mmalign.utils.atomic import atomic_directory
from mmalign.utils.io_errors import reading
from mmalign.utils.progress import echo
from mmalign.utils.rundir import RunDir

MANIFEST = "MANIFEST.json"
DEFAULT_KEEP = 3  # checkpoints kept by a recipe whose config has no checkpoint.keep
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- RNG --------------------------------------------------------------------------------------
def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state a training step can touch, in types ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        if name in state["generators"]:
            gen.set_state(state["generators"][name])


# -- save / verify / load ---------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A verified checkpoint on disk."""

    path: Path
    step: int

    def tensors(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path / "trainable.safetensors"))

    def optimizer(self) -> dict[str, Any]:
        return self._load("optimizer.pt", "checkpoint's optimizer state")

    def rng(self) -> dict[str, Any]:
        return self._load("rng.pt", "checkpoint's RNG state")

    def _load(self, name: str, what: str) -> dict[str, Any]:
        """``torch.load(weights_only=True)``: a file that would run code is a one-line error."""
        with reading(self.path / name, what=what, broad=True):
            return torch.load(self.path / name, map_location="cpu", weights_only=True)

    def trainer(self) -> dict[str, Any]:
        return json.loads((self.path / "trainer.json").read_text(encoding="utf-8"))


def save_checkpoint(root: str | Path, step: int, *, tensors: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    rng: dict[str, Any], trainer: dict[str, Any], keep: int = 3,
                    extra: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically, then keep only the newest ``keep``.

    ``extra(tmp_dir)`` may add more files (e.g. a Hugging Face export); they are hashed too.
    """
    from safetensors.torch import save_file

    root = Path(root)
    target = root / checkpoint_name(step)
    with atomic_directory(target, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "trainable.safetensors"))
        torch.save(optimizer, tmp / "optimizer.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / "trainer.json").write_text(json.dumps({"step": int(step), **trainer}, indent=1), encoding="utf-8")
        if extra is not None:
            extra(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {"step": int(step), "files": {str(p.relative_to(tmp)): {"sha256": _sha256(p), "size": p.stat().st_size}
                                                 for p in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    rotate(root, keep)
    return target


def verify(path: Path) -> str | None:
    """``None`` if the checkpoint at ``path`` matches its manifest, else what is wrong (one line)."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (incomplete checkpoint)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    for name, info in files.items():
        p = path / name
        if not p.is_file():
            return f"missing file {name}"
        if p.stat().st_size != info["size"]:
            return f"{name} has {p.stat().st_size} bytes, manifest says {info['size']}"
        if _sha256(p) != info["sha256"]:
            return f"{name} does not match its sha256 in the manifest"
    return None


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """All ``step-*`` directories under ``root`` (verified or not), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_valid(root: str | Path, report: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that verifies; each bad one newer than it is passed to ``report``."""
    for step, path in reversed(list_checkpoints(root)):
        problem = verify(path)
        if problem is None:
            return Checkpoint(path=path, step=step)
        if report is not None:
            report(f"checkpoint {path.name} is corrupt or partial ({problem}); using the previous one")
    return None


def rotate(root: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` valid checkpoints (invalid ones newer than them stay for
    inspection until a newer valid checkpoint replaces them)."""
    entries = list_checkpoints(root)
    valid = [(s, p) for s, p in entries if (p / MANIFEST).is_file()]
    if keep <= 0 or len(valid) <= keep:
        return
    oldest_kept = valid[-keep][0]
    for step, path in entries:
        if step < oldest_kept:
            shutil.rmtree(path, ignore_errors=True)


def trainable_tensors(groups: dict[str, list[torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    """``{"policy.0": ..., "value.3": ...}`` from named lists of parameters (their order is stable)."""
    return {f"{name}.{i}": p.detach() for name, params in groups.items() for i, p in enumerate(params)}


def load_trainable(groups: dict[str, list[torch.nn.Parameter]], tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved tensors back into the parameters, checking names and shapes."""
    expected = {f"{name}.{i}": p for name, params in groups.items() for i, p in enumerate(params)}
    if set(expected) != set(tensors):
        missing = sorted(set(expected) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(expected))[:3]
        raise ValueError(f"checkpoint parameters do not match the model (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for key, param in expected.items():
            src = tensors[key]
            if src.shape != param.shape:
                raise ValueError(f"checkpoint tensor {key} has shape {tuple(src.shape)}, model has {tuple(param.shape)}")
            param.copy_(src.to(param.device, param.dtype))


# -- what a recipe calls --------------------------------------------------------------------
@dataclass
class _GatheredOptimizer:
    """An optimizer's state, already gathered, as :func:`save_training` asks for it (``state_dict()``)."""

    state: dict[str, Any]

    def state_dict(self) -> dict[str, Any]:
        return self.state


def full_state(groups: dict[str, list[torch.nn.Parameter]], optimizer: Any) -> tuple[dict[str, list[Any]], Any]:
    """The parameter groups and optimizer for :func:`save_training`: as they are, or under FSDP2
    their full tensors gathered on every process (a collective: every process calls it)."""
    if not fsdp.is_sharded(p for params in groups.values() for p in params):
        return groups, optimizer
    return fsdp.full_tensors(groups), _GatheredOptimizer(fsdp.full_tensors(optimizer.state_dict()))


def save_training(root: str | Path, step: int, *, groups: dict[str, list[torch.nn.Parameter]], optimizer: Any,
                  scheduler: Any, keep: int, trainer: dict[str, Any] | None = None,
                  generators: dict[str, torch.Generator] | None = None) -> Path:
    """Checkpoint ``step`` of a training loop: the parameters in ``groups``, the optimizer, the
    scheduler (in ``trainer.json``), every RNG (``generators`` too) and the recipe's ``trainer`` extras."""
    return save_checkpoint(root, step, tensors=trainable_tensors(groups), optimizer=optimizer.state_dict(),
                           rng=capture_rng(generators), keep=keep,
                           trainer={**(trainer or {}), "scheduler": scheduler.state_dict()})


def restore_training(found: Checkpoint, *, groups: dict[str, list[torch.nn.Parameter]], optimizer: Any,
                     scheduler: Any, generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Load ``found`` into what :func:`save_training` saved; returns its ``trainer.json``.

    Call it after the model, optimizer and scheduler exist (a scheduler's constructor resets the
    learning rate) and right before the loop (the RNG states are those of the step after ``found``).
    FSDP2 shards (every process calls it then) load into full-size buffers, then each process keeps
    its parts of the weights and of the optimizer moments.
    """
    sharded = fsdp.is_sharded(p for params in groups.values() for p in params)
    target = ({name: [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in params]
               for name, params in groups.items()} if sharded else groups)
    try:
        load_trainable(target, found.tensors())
    except ValueError as exc:  # the config now builds a different model
        raise FileError(str(found.path / "trainable.safetensors"), f"{exc}; resume with the run's own config") from None
    optimizer.load_state_dict(found.optimizer())
    state = found.trainer()
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(found.rng(), generators)
    if sharded:
        for name, params in groups.items():
            fsdp.copy_into_shards(params, target[name])
        fsdp.shard_optimizer_state(optimizer)
    return state


def resume_point(run: RunDir) -> Checkpoint | None:
    """The checkpoint a resumed ``run`` continues from: the newest that verifies (each newer bad one
    is a one-line warning, printed and in ``run.log``), with ``metrics.jsonl`` cut back to its step.

    None for a new run, or when no checkpoint verifies: then the resumed run starts over and keeps
    no metrics.
    """
    if not run.resumed:
        return None

    def report(msg: str) -> None:
        echo(f"mmalign: warning: {msg}")
        run.logger.warning(msg)

    found = latest_valid(run.checkpoints, report)
    run.truncate_metrics(found.step if found is not None else -1)
    run.logger.info("resuming after step %d", found.step if found is not None else 0)
    return found
