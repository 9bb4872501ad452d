"""Media adapters: encoder + projector for one family of media, behind one small interface.

``prepare(kind, item, where)`` reads and preprocesses one item on the CPU; ``num_tokens(kind,
prepared)`` says how many placeholder tokens it fills; ``encode(items)`` runs the encoder ONCE on
all prepared items of a batch and returns one ``[tokens, lm_width]`` tensor per item.

* :class:`VisionAdapter` (``image`` and ``video``): open_clip tower + projector; a video is a list
  of sampled frames, each frame through the tower, its tokens concatenated.
* :class:`AudioAdapter` (``audio``): log-mel + conv subsampling + Transformer + projector.
* :class:`NativeVisionAdapter` (``image``): the vision tower and projector inside a Hugging Face
  ``AutoModelForImageTextToText`` (LLaVA-style ``get_image_features``), with its own processor.

``spec`` is the plain-dict architecture an adapter is rebuilt from when a policy is loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmalign.errors import ConfigError
from mmalign.models.audio import AudioEncoder
from mmalign.models.media import PLACEHOLDERS, load_audio, load_image, video_frames
from mmalign.models.projector import build_projector
from mmalign.models.vision import OpenClipTower


class MediaAdapter(nn.Module):
    """Base class: subclasses set ``kinds`` and implement the three methods."""

    kinds: tuple[str, ...] = ()
    spec: dict

    def placeholders(self) -> dict[str, str]:
        return {k: PLACEHOLDERS[k] for k in self.kinds}

    def prepare(self, kind: str, item: Any, where: str) -> torch.Tensor:
        raise NotImplementedError

    def num_tokens(self, kind: str, prepared: torch.Tensor) -> int:
        raise NotImplementedError

    def encode(self, items: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        raise NotImplementedError

    def encoder_modules(self) -> list[nn.Module]:
        """The encoder part (frozen in every SFT stage by default)."""
        return []

    def projector_modules(self) -> list[nn.Module]:
        """The projector part (the only trainable part in the projector-only SFT stage)."""
        return []


class VisionAdapter(MediaAdapter):
    """open_clip vision tower + projector; ``video`` items are ``num_frames`` sampled frames."""

    kinds = ("image", "video")

    def __init__(self, spec: dict, lm_width: int) -> None:
        super().__init__()
        self.spec = dict(spec)
        self.spec.setdefault("projector", "mlp")
        self.spec.setdefault("num_frames", 8)
        self.tower = OpenClipTower(spec["model"], spec.get("pretrained"), int(spec.get("num_tokens", 0) or 0))
        self.spec["num_tokens"] = self.tower.num_tokens
        if isinstance(spec["model"], str):
            self.spec["model"] = self.tower.open_clip_config  # rebuild from config, weights come from the save
            self.spec["pretrained"] = None
        self.projector = build_projector(self.spec["projector"], self.tower.width, lm_width)

    def prepare(self, kind: str, item: Any, where: str) -> torch.Tensor:
        if kind == "video":
            frames = video_frames(item, int(self.spec["num_frames"]), where)
            return torch.stack([self.tower.preprocess(f) for f in frames])
        return self.tower.preprocess(load_image(item, where))[None]

    def num_tokens(self, kind: str, prepared: torch.Tensor) -> int:
        return prepared.shape[0] * self.tower.num_tokens

    def encode(self, items: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        param = next(self.tower.parameters())
        frames = torch.cat([p for _, p in items]).to(param.device, param.dtype)
        feats = self.projector(self.tower(frames))  # [frames, tokens, lm_width]
        sizes = [p.shape[0] for _, p in items]
        return [f.reshape(-1, f.shape[-1]) for f in feats.split(sizes)]

    def encoder_modules(self) -> list[nn.Module]:
        return [self.tower]

    def projector_modules(self) -> list[nn.Module]:
        return [self.projector]


class AudioAdapter(MediaAdapter):
    """Log-mel Transformer encoder + projector over 16 kHz waveforms."""

    kinds = ("audio",)

    def __init__(self, spec: dict, lm_width: int) -> None:
        super().__init__()
        self.spec = dict(spec)
        self.spec.setdefault("projector", "mlp")
        enc = dict(self.spec.get("encoder", {}))
        self.spec["encoder"] = enc
        self.encoder = AudioEncoder(**enc)
        self.projector = build_projector(self.spec["projector"], self.encoder.width, lm_width)

    def prepare(self, kind: str, item: Any, where: str) -> torch.Tensor:
        wave = load_audio(item, where)
        max_s = float(self.spec.get("max_seconds", 30.0))
        return wave[: int(max_s * 16_000)]

    def num_tokens(self, kind: str, prepared: torch.Tensor) -> int:
        return self.encoder.num_tokens(prepared.numel())

    def encode(self, items: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        states = self.encoder([p for _, p in items])
        return [self.projector(s) for s in states]

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def projector_modules(self) -> list[nn.Module]:
        return [self.projector]


class NativeVisionAdapter(MediaAdapter):
    """The vision path of a native HF VLM; holds references (not copies) to the VLM's modules."""

    kinds = ("image",)

    def __init__(self, vlm: nn.Module, processor: Any) -> None:
        super().__init__()
        if not hasattr(vlm, "get_image_features"):
            raise ConfigError(f"{type(vlm).__name__} has no get_image_features(); not a LLaVA-style VLM")
        object.__setattr__(self, "_vlm", vlm)  # not registered: the weights belong to the VLM
        self.processor = processor
        self.spec = {"native": True}
        cfg = vlm.config
        self.image_tokens = self._count_tokens(cfg)

    @staticmethod
    def _count_tokens(cfg: Any) -> int:
        v = getattr(cfg, "vision_config", None)
        if v is None or not getattr(v, "image_size", None) or not getattr(v, "patch_size", None):
            return int(cfg.image_seq_length)
        n = (v.image_size // v.patch_size) ** 2
        # "default" drops the CLS token, leaving the patches; "full" keeps it
        return n + 1 if getattr(cfg, "vision_feature_select_strategy", "default") == "full" else n

    def prepare(self, kind: str, item: Any, where: str) -> torch.Tensor:
        image = load_image(item, where)
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]

    def num_tokens(self, kind: str, prepared: torch.Tensor) -> int:
        return prepared.shape[0] * self.image_tokens

    def encode(self, items: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
        param = next(self._vlm.parameters())
        pixels = torch.cat([p for _, p in items]).to(param.device, param.dtype)
        out = self._vlm.get_image_features(pixel_values=pixels, return_dict=True)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        if isinstance(feats, (list, tuple)):
            feats = torch.stack(list(feats))
        sizes = [p.shape[0] for _, p in items]
        return [f.reshape(-1, f.shape[-1]) for f in feats.split(sizes)]

    def encoder_modules(self) -> list[nn.Module]:
        return [getattr(self._vlm.model, "vision_tower", self._vlm)]

    def projector_modules(self) -> list[nn.Module]:
        proj = getattr(self._vlm.model, "multi_modal_projector", None)
        return [proj] if proj is not None else []


ADAPTERS = {"vision": VisionAdapter, "audio": AudioAdapter}


def build_adapter(name: str, spec: dict, lm_width: int) -> MediaAdapter:
    if name not in ADAPTERS:
        raise ConfigError(f"unknown media adapter '{name}' (known: {', '.join(ADAPTERS)})")
    return ADAPTERS[name](spec, lm_width)
