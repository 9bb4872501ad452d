"""`scripts/tilt_regression.py`: its centred residual is fitted exactly by the KL-regularised tilt."""

from __future__ import annotations

import pytest
import torch

from tests.scripts.loading import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("tilt_regression")


def _tilt(ref: torch.Tensor, phi: torch.Tensor, beta: float) -> torch.Tensor:
    w = ref * torch.exp(phi / beta)
    return w / w.sum()


def test_the_residual_vanishes_at_the_tilt_and_only_there(probe):
    ref = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    phi = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    beta = 0.4
    tilt = _tilt(ref, phi, beta)
    at_tilt = probe.centred_residual((tilt.log() - ref.log()).view(1, -1), phi.view(1, -1), beta)
    assert at_tilt.abs().max() < 1e-12
    elsewhere = probe.centred_residual((_tilt(ref, phi, 2 * beta).log() - ref.log()).view(1, -1), phi.view(1, -1), beta)
    assert elsewhere.abs().max() > 0.1


def test_fitting_reference_samples_reaches_the_tilt(probe):
    """Free logits fitted on fresh reference draws (the script's loss) converge to π_ref·e^{Φ/β}/Z."""
    gen = torch.Generator().manual_seed(0)
    ref = torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08], dtype=torch.float64)
    phi = torch.tensor([0.0, 0.05, 0.2, 0.6, 1.0], dtype=torch.float64)
    beta = 0.3
    logits = ref.log().clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.02)
    for _ in range(1500):
        draws = torch.multinomial(ref.expand(16, -1), 8, replacement=True, generator=gen)  # 16 groups x 8
        log_ratio = torch.log_softmax(logits, 0)[draws] - ref.log()[draws]
        loss = probe.centred_residual(log_ratio, phi[draws], beta).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fitted = torch.softmax(logits.detach(), 0)
    # the tilt is far from the start (0.46 apart at the top outcome), so landing within 0.01 is the fit's doing
    assert torch.allclose(fitted, _tilt(ref, phi, beta), atol=0.01)
