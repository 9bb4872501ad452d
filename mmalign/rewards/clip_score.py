"""``kind: clip_score``: image-text similarity under an open_clip model.

``r(x, y) = scale * mean_i cos(E_img(image_i), E_txt(text))`` over the row's images, where the
text is the response (or ``prompt + response`` with ``text: prompt_response``). ``model`` is an
open_clip name (``ViT-B-32``) or ``local-dir:path``; ``pretrained`` is a tag or a weights file
(``null``: random weights, for tests). Media items are image file paths or PIL images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmalign.errors import ConfigError, DataError
from mmalign.rewards.base import check_batch, stable_hash, to_scores
from mmalign.utils.digest import weights_digest


class ClipScoreReward:
    """open_clip image-text cosine similarity, scaled; deterministic."""

    deterministic = True

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, *, text: str = "response",
                 scale: float = 1.0, batch_size: int = 16, device: str = "auto") -> None:
        import open_clip

        from mmalign.utils.device import resolve_device

        self.model_name, self.pretrained, self.text, self.scale = model, pretrained, text, float(scale)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained,
                                                                        device=self.device)
            self.tokenize = open_clip.get_tokenizer(model)
        except (RuntimeError, ValueError, FileNotFoundError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(f"model: cannot create open_clip model '{model}' (pretrained={pretrained}): {first}") from None
        self.model = clip.eval()
        self.preprocess = preprocess

    def _image(self, item: Any, row: int) -> torch.Tensor:
        from PIL import Image

        if isinstance(item, (str, Path)):
            if not Path(item).is_file():
                raise DataError(f"clip_score: image file not found for prompt index {row}: {item}")
            from mmalign.models.media import load_image

            return self.preprocess(load_image(item, where=f"clip_score: prompt index {row}"))
        if isinstance(item, Image.Image):
            return self.preprocess(item.convert("RGB"))
        raise DataError(f"clip_score: prompt index {row}: media items must be image paths or PIL images, "
                        f"got {type(item).__name__}")

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 media: Sequence[list] | None = None) -> torch.Tensor:
        check_batch(prompts, responses, media)
        if media is None:
            raise DataError("clip_score reward needs media (images) for every response")
        texts = [r if self.text == "response" else f"{p} {r}" for p, r in zip(prompts, responses)]
        images, owners = [], []
        for row, items in enumerate(media):
            if not items:
                raise DataError(f"clip_score: prompt index {row} has no image")
            for item in items:
                images.append(self._image(item, row))
                owners.append(row)
        txt = torch.cat([self.model.encode_text(self.tokenize(texts[i:i + self.batch_size]).to(self.device))
                         for i in range(0, len(texts), self.batch_size)])
        img = torch.cat([self.model.encode_image(torch.stack(images[i:i + self.batch_size]).to(self.device))
                         for i in range(0, len(images), self.batch_size)])
        txt = torch.nn.functional.normalize(txt.float(), dim=-1).cpu()
        img = torch.nn.functional.normalize(img.float(), dim=-1).cpu()
        owner = torch.tensor(owners)
        cos = (img * txt[owner]).sum(-1)
        sums = torch.zeros(len(texts)).index_add_(0, owner, cos)
        counts = torch.zeros(len(texts)).index_add_(0, owner, torch.ones_like(cos))
        return to_scores(self.scale * sums / counts, len(texts), source="clip_score reward")

    def fingerprint(self) -> str:
        weights = ""
        if self.pretrained and Path(self.pretrained).is_file():
            weights = weights_digest(Path(self.pretrained).parent, suffixes=(".safetensors", ".bin", ".json"))
        elif self.model_name.startswith("local-dir:"):
            weights = weights_digest(Path(self.model_name[len("local-dir:"):]), suffixes=(".safetensors", ".bin", ".json"))
        if self.pretrained is None and not weights:
            # random weights: identity is the tensor values themselves
            weights = stable_hash([float(p.double().sum()) for p in self.model.parameters()])
        return stable_hash({"kind": "clip_score", "model": self.model_name, "pretrained": self.pretrained,
                            "weights": weights, "text": self.text, "scale": self.scale})
