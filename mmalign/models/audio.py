"""An audio encoder in the Whisper / Qwen2-Audio shape: 16 kHz waveform → log-mel features
(25 ms window = 400 samples, 10 ms hop = 160) → two stride-2 1-D convolutions (4× subsampling,
one frame per 40 ms) → a Transformer encoder → frames [B, T', width], optionally average-pooled
by ``pool`` more frames per token.
"""

from __future__ import annotations

import torch
from torch import nn

from mmalign.models.media import SAMPLE_RATE

WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms at 16 kHz


class LogMel(nn.Module):
    """Waveform [B, samples] → log-mel [B, n_mels, frames] (Whisper-style clamping and scaling)."""

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        import torchaudio

        self.n_mels = n_mels
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=WINDOW, win_length=WINDOW,
                                                        hop_length=HOP, n_mels=n_mels, power=2.0)

    @staticmethod
    def frames(samples: int) -> int:
        return samples // HOP + 1

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.mel(wave.float()).clamp(min=1e-10).log10()
        spec = torch.maximum(spec, spec.amax(dim=(-2, -1), keepdim=True) - 8.0)
        return (spec + 4.0) / 4.0


def _conv_out(length: int) -> int:
    return (length - 1) // 2 + 1  # kernel 3, stride 2, padding 1


class AudioEncoder(nn.Module):
    """Log-mel frames → encoder states; ``num_tokens(samples)`` says how many a clip gives."""

    def __init__(self, n_mels: int = 80, width: int = 256, layers: int = 4, heads: int = 4,
                 max_frames: int = 1500, pool: int = 1) -> None:
        super().__init__()
        self.features = LogMel(n_mels)
        self.width = width
        self.pool = pool
        self.conv1 = nn.Conv1d(n_mels, width, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        self.position = nn.Parameter(torch.randn(max_frames, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def num_tokens(self, samples: int) -> int:
        frames = _conv_out(_conv_out(LogMel.frames(samples)))
        return max(1, frames // self.pool)

    def forward(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encode a list of 1-D waveforms (any lengths) in one batch; returns one [T'_i, width] each."""
        lengths = [int(w.numel()) for w in waves]
        batch = nn.utils.rnn.pad_sequence(waves, batch_first=True)
        mel = self.features(batch.to(self.position.device))
        x = nn.functional.gelu(self.conv1(mel.to(self.position.dtype)))
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)  # [B, T', width]
        t = x.shape[1]
        if t > self.position.shape[0]:
            raise ValueError(f"audio too long: {t} encoder frames > max_frames={self.position.shape[0]}")
        x = x + self.position[:t]
        valid = [_conv_out(_conv_out(LogMel.frames(n))) for n in lengths]
        pad = torch.arange(t, device=x.device)[None, :] >= torch.tensor(valid, device=x.device)[:, None]
        x = self.norm(self.encoder(x, src_key_padding_mask=pad))
        out = []
        for i, n in enumerate(valid):
            row = x[i, :n]
            if self.pool > 1:
                keep = max(1, n // self.pool)
                row = row[: keep * self.pool].reshape(keep, self.pool, -1).mean(1) if n >= self.pool else row.mean(0, keepdim=True)
            out.append(row)
        return out
