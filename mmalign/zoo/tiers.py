"""Tier specs: ``mmalign/zoo/specs/<family>/<tier>.yaml`` read into :class:`Tier` (the open_clip
way: model configs as data inside the package).

A tier names an architecture, its recommended precision and placement, and public checkpoints a
user can map it to. ``width_scale`` shrinks the same spec (hidden, intermediate, depth, heads) so
tests and laptops can instantiate a tier at toy width. Families: ``text``, ``vision``, ``audio``
and ``multimodal``, all read by this loader. ``MMALIGN_ZOO`` points at another specs directory.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmalign.errors import ConfigError, UserError

ENV_VAR = "MMALIGN_ZOO"
SPECS = Path(__file__).resolve().parent / "specs"


def zoo_root() -> Path:
    """The tier specs directory (``$MMALIGN_ZOO``, else ``specs/`` inside this package)."""
    env = os.environ.get(ENV_VAR)
    root = Path(env).expanduser() if env else SPECS
    if not root.is_dir():
        raise UserError(f"model zoo not found at {root}; set {ENV_VAR} to a directory of <family>/<tier>.yaml specs")
    return root


@dataclass(frozen=True)
class Tier:
    """One tier spec, read from ``<zoo>/<family>/<name>.yaml``."""

    name: str
    family: str
    architecture: dict[str, Any]
    description: str = ""
    precision: str = "bfloat16"
    placement: str = "single_gpu"
    checkpoints: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.family}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "description": self.description,
                "architecture": dict(self.architecture), "precision": self.precision,
                "placement": self.placement, "checkpoints": list(self.checkpoints), **self.extra}


def _read_tier(path: Path) -> Tier:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("architecture"), dict):
        raise ConfigError(f"{path}: a tier file needs an 'architecture' mapping")
    known = {"name", "family", "architecture", "description", "precision", "placement", "checkpoints"}
    return Tier(name=str(data.get("name", path.stem)), family=str(data.get("family", path.parent.name)),
                architecture=data["architecture"], description=str(data.get("description", "")),
                precision=str(data.get("precision", "bfloat16")), placement=str(data.get("placement", "single_gpu")),
                checkpoints=tuple(data.get("checkpoints") or ()),
                extra={k: v for k, v in data.items() if k not in known}, source=str(path))


def list_tiers(family: str | None = None) -> list[Tier]:
    """Every tier (of one family, if given), sorted by family then size."""
    root = zoo_root()
    families = [family] if family else sorted(p.name for p in root.iterdir() if p.is_dir())
    tiers = []
    for fam in families:
        if not (root / fam).is_dir():
            raise UserError(f"no model-zoo family '{fam}' (known: {', '.join(sorted(p.name for p in root.iterdir() if p.is_dir()))})")
        tiers.extend(_read_tier(p) for p in sorted((root / fam).glob("*.yaml")))
    return sorted(tiers, key=lambda t: (t.family, estimate_params(t.architecture) if t.family == "text" else 0, t.name))


def get_tier(name: str) -> Tier:
    """A tier by ``family/name`` or by bare ``name`` (text first, then any unique match)."""
    tiers = list_tiers()
    family, _, short = name.rpartition("/")
    matches = [t for t in tiers if t.name == short and (not family or t.family == family)]
    if not family and len(matches) > 1:
        matches = [t for t in matches if t.family == "text"] or matches
    if len(matches) == 1:
        return matches[0]
    names = [t.full_name for t in tiers]
    if matches:
        raise UserError(f"tier '{name}' is ambiguous: {', '.join(t.full_name for t in matches)}")
    close = difflib.get_close_matches(name, names + [t.name for t in tiers], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"unknown tier '{name}'{hint}; known: {', '.join(names)}")


def estimate_params(arch: dict[str, Any], vocab_size: int | None = None) -> int:
    """Parameter count of a Llama-style decoder spec (embeddings, GQA attention, SwiGLU MLP, norms)."""
    h, inter, layers = arch["hidden_size"], arch["intermediate_size"], arch["num_layers"]
    heads, kv = arch["num_heads"], arch["num_kv_heads"]
    vocab = vocab_size or arch.get("vocab_size", 32000)
    head_dim = arch.get("head_dim") or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    per_layer = attn + 3 * h * inter + 2 * h
    embed = vocab * h * (1 if arch.get("tie_word_embeddings") else 2)
    return embed + layers * per_layer + h


def scale_architecture(arch: dict[str, Any], width_scale: float = 1.0, num_layers: int | None = None) -> dict[str, Any]:
    """Shrink hidden/intermediate widths and depth by ``width_scale`` (depth overridable), keeping
    the grouped-query ratio and an even head dim of at least 16 where possible."""
    if not 0 < width_scale <= 1:
        raise UserError(f"width scale must be in (0, 1], got {width_scale}")
    out = dict(arch)
    if width_scale == 1 and num_layers is None:
        return out
    hidden = max(32, int(round(arch["hidden_size"] * width_scale / 16)) * 16)
    inter = max(32, int(round(arch["intermediate_size"] * width_scale / 16)) * 16)
    group = arch["num_heads"] // arch["num_kv_heads"]
    heads, kv = group, 1
    for kv_try in range(arch["num_kv_heads"], 0, -1):
        h_try = kv_try * group
        if hidden % h_try == 0 and (hidden // h_try) % 2 == 0 and hidden // h_try >= 16:
            heads, kv = h_try, kv_try
            break
    if hidden % heads:
        heads, kv = 1, 1
    out.update(hidden_size=hidden, intermediate_size=inter, num_heads=heads, num_kv_heads=kv,
               num_layers=num_layers or max(1, int(round(arch["num_layers"] * width_scale))))
    out.pop("head_dim", None)
    return out
