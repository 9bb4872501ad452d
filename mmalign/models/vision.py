"""An open_clip vision tower that returns patch tokens, with its own preprocessing.

``model`` is an open_clip model name (``ViT-B-32``) with an optional ``pretrained`` tag
(``laion2b_s34b_b79k``), or an inline open_clip model config (``{"embed_dim": .., "vision_cfg":
{..}, "text_cfg": {..}}``, the JSON open_clip keeps under ``model_configs/``) for toy widths.
Only the ``visual`` tower is kept. Its patch tokens ``[B, N, width]`` (``output_tokens=True``) are
optionally average-pooled to ``num_tokens`` on the patch grid.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from mmalign.errors import ConfigError


def _open_clip_config(model: str | dict) -> dict:
    import open_clip

    if isinstance(model, dict):
        return copy.deepcopy(model)
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise ConfigError(f"unknown open_clip model '{model}' (see open_clip.list_models())")
    return cfg


def build_visual(model: str | dict, pretrained: str | None = None) -> tuple[nn.Module, dict, dict]:
    """(visual tower, open_clip config, preprocess config {size, mean, std})."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = _open_clip_config(model)
    if isinstance(model, dict) or not pretrained:
        clip = open_clip.model.CLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
        mean, std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    else:
        try:
            clip = open_clip.create_model(model, pretrained=pretrained)
        except RuntimeError as exc:
            raise ConfigError(f"cannot load open_clip {model}/{pretrained}: {exc}") from None
        pre = open_clip.get_model_preprocess_cfg(clip)
        mean, std = pre.get("mean", OPENAI_DATASET_MEAN), pre.get("std", OPENAI_DATASET_STD)
    size = cfg["vision_cfg"].get("image_size", 224)
    size = size if isinstance(size, int) else int(size[0])
    visual = clip.visual
    del clip
    return visual, cfg, {"size": size, "mean": list(mean), "std": list(std)}


class OpenClipTower(nn.Module):
    """Image → patch tokens [B, num_tokens, width] through an open_clip ``VisionTransformer``."""

    def __init__(self, model: str | dict, pretrained: str | None = None, num_tokens: int = 0) -> None:
        super().__init__()
        import open_clip

        self.visual, self.open_clip_config, self.preprocess_cfg = build_visual(model, pretrained)
        if not hasattr(self.visual, "output_tokens"):
            raise ConfigError("vision tower: only open_clip VisionTransformer towers can output patch tokens")
        self.visual.output_tokens = True
        vcfg = self.open_clip_config["vision_cfg"]
        grid = self.preprocess_cfg["size"] // vcfg.get("patch_size", 16)
        self.grid = grid
        self.width = int(vcfg.get("width", 768))
        self.num_tokens = int(num_tokens or grid * grid)
        side = math.isqrt(self.num_tokens)
        if side * side != self.num_tokens or side > grid:
            raise ConfigError(f"vision num_tokens={self.num_tokens} must be a square <= {grid * grid} patches")
        self.transform = open_clip.image_transform(self.preprocess_cfg["size"], is_train=False,
                                                   mean=tuple(self.preprocess_cfg["mean"]),
                                                   std=tuple(self.preprocess_cfg["std"]))

    def preprocess(self, image: Any) -> torch.Tensor:
        """A PIL image → normalised pixels [3, H, W]."""
        return self.transform(image)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        _, tokens = self.visual(pixels)
        if tokens.shape[1] != self.grid * self.grid:  # e.g. a prefix token kept by the pool type
            tokens = tokens[:, -self.grid * self.grid:]
        side = math.isqrt(self.num_tokens)
        if side != self.grid:
            b, _, d = tokens.shape
            grid = tokens.transpose(1, 2).reshape(b, d, self.grid, self.grid)
            tokens = nn.functional.adaptive_avg_pool2d(grid, side).flatten(2).transpose(1, 2)
        return tokens
