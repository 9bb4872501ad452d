""":func:`build_reward`: a Reward from a ``reward:`` config (a RewardConfig or a plain dict)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmalign.config.schemas.reward import REWARD_KINDS, RewardConfig
from mmalign.errors import ConfigError, FileError
from mmalign.rewards.base import Reward

_FIELDS = {f.name for f in dataclasses.fields(RewardConfig)}


def reward_config(spec: RewardConfig | dict | DictConfig, where: str = "reward") -> RewardConfig:
    """Validate ``spec`` onto :class:`RewardConfig`; errors name the key path (``where.key``)."""
    if isinstance(spec, RewardConfig):
        return spec
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)  # type: ignore[assignment]
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a reward must be a mapping with a 'kind', got {type(spec).__name__}")
    kind = spec.get("kind", "rules")
    if kind not in REWARD_KINDS:
        close = difflib.get_close_matches(str(kind), REWARD_KINDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(REWARD_KINDS)})"
        raise ConfigError(f"{where}.kind: unknown reward kind '{kind}'{hint}")
    for key in spec:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{where}.{key}'{hint}")
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RewardConfig), spec))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{where}.{key}: {str(exc).splitlines()[0]}") from None
    from mmalign.config.loader import _Origins, _validate_ranges

    _validate_ranges(cfg, where, _Origins(), where)
    return cfg  # type: ignore[return-value]


def build_reward(spec: RewardConfig | dict | DictConfig, where: str = "reward") -> Reward:
    """Build the reward a config describes (``kind`` selects the implementation)."""
    cfg = reward_config(spec, where)
    kind = cfg.kind
    if kind == "rules":
        from mmalign.rewards.rules import RulesReward

        return RulesReward(cfg.rules, where=f"{where}.rules")
    if kind in ("bundled_text", "bundled_smooth", "bundled_style"):
        from mmalign.rewards.bundled import BundledTextReward

        return BundledTextReward(kind)
    if kind == "python":
        from mmalign.rewards.python_fn import python_reward

        return python_reward(cfg.function, deterministic=cfg.deterministic, where=f"{where}.function")
    if kind == "hf_classifier":
        from mmalign.rewards.hf_classifier import HFClassifierReward

        try:
            return HFClassifierReward(cfg.path, label_index=cfg.label_index, format=cfg.format,
                                      separator=cfg.separator, max_length=cfg.max_length,
                                      batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
                                      trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None
        except FileError as exc:
            raise FileError(exc.path, exc.problem, key=f"{where}.{exc.key}" if exc.key else where) from exc
    if kind == "clip_score":
        from mmalign.rewards.clip_score import ClipScoreReward

        try:
            return ClipScoreReward(cfg.model, cfg.pretrained, text=cfg.text, scale=cfg.scale,
                                   batch_size=cfg.batch_size, device=cfg.device)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None
    # ensemble
    from mmalign.rewards.ensemble import EnsembleReward

    parts, weights = [], []
    for i, comp in enumerate(cfg.components):
        comp_where = f"{where}.components.{i}"
        if not isinstance(comp, dict):
            raise ConfigError(f"{comp_where}: each component must be a reward mapping with a 'kind'")
        comp = dict(comp)
        weight = comp.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{comp_where}.weight: must be a number, got {weight!r}")
        parts.append(build_reward(comp, comp_where))
        weights.append(float(weight))
    return EnsembleReward(parts, weights)


def reward_from_config(spec: Any, where: str = "reward") -> Reward:
    """Alias of :func:`build_reward`."""
    return build_reward(spec, where)
