"""PIT SI-SNR loss and SI-SNRi/SDRi: invariances, known values, the Echo2Mix golden numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ssmkit.audio.io import read_audio
from ssmkit.audio.metrics import (
    pit_reorder,
    pit_si_snr,
    sdr_improvement,
    si_snr,
    si_snr_improvement,
)


def test_loss_is_permutation_invariant() -> None:
    target = torch.randn(3, 2, 800)
    preds = target + 0.1 * torch.randn_like(target)
    swapped = preds[:, [1, 0]]
    assert torch.allclose(pit_si_snr(preds, target), pit_si_snr(swapped, target))
    # a fixed-order loss would see the swap
    assert not torch.allclose(-si_snr(swapped, target).mean(), -si_snr(preds, target).mean())
    torch.testing.assert_close(pit_reorder(swapped, target), preds)


def test_loss_value_and_scale_invariance() -> None:
    target = torch.randn(2, 2, 1000)
    noise = torch.randn_like(target)
    noise = (
        noise
        - (noise * target).sum(-1, keepdim=True) / target.pow(2).sum(-1, keepdim=True) * target
    )
    noise = noise - noise.mean(-1, keepdim=True)
    target = target - target.mean(-1, keepdim=True)
    noise = noise / noise.norm(dim=-1, keepdim=True) * target.norm(dim=-1, keepdim=True) * 0.1
    loss = pit_si_snr(3.0 * (target + noise), target)  # SNR 20 dB, any scale
    assert math.isclose(float(loss), -20.0, abs_tol=0.05)
    clipped = pit_si_snr(target, target, clip_db=30.0)
    assert math.isclose(float(clipped), -30.0, abs_tol=1e-4)


def test_improvement_of_the_mixture_itself_is_zero_and_oracle_is_large() -> None:
    sources = torch.randn(2, 2, 2000)
    mixture = sources.sum(1)
    same = si_snr_improvement(mixture[:, None].expand(-1, 2, -1), sources, mixture)
    assert same.abs().max() < 1e-3
    assert (si_snr_improvement(sources, sources, mixture) > 40).all()
    assert (
        sdr_improvement(sources + 1e-3 * torch.randn_like(sources), sources, mixture) > 20
    ).all()


def test_shape_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"\(B, n_src, T\)"):
        pit_si_snr(torch.randn(2, 100), torch.randn(2, 100))
    with pytest.raises(ValueError, match="same shape"):
        pit_si_snr(torch.randn(1, 2, 100), torch.randn(1, 2, 99))
    with pytest.raises(ValueError, match="mixture"):
        si_snr_improvement(torch.randn(1, 2, 100), torch.randn(1, 2, 100), torch.randn(1, 90))


def _demo(root: Path, system: str) -> float:
    values = []
    for clip in sorted((root / "gt").iterdir()):
        mix, rate = read_audio(clip / "mix.wav", 16000)
        refs = torch.stack([read_audio(clip / f"spk{k}_reverb.wav", rate)[0] for k in (1, 2)])
        est = torch.stack(
            [read_audio(root / system / clip.name / f"s{k}.wav", rate)[0] for k in (1, 2)]
        )
        values.append(float(si_snr_improvement(est[None], refs[None], mix[None])))
    assert len(values) == 5
    return sum(values) / len(values)


def test_echo2mix_demo_golden_si_snri(shared_data: Path) -> None:
    root = shared_data / "echo2mix_demo"
    if not root.is_dir():
        pytest.skip(f"{root} missing (see ../shared/data/SOURCES.md)")
    assert math.isclose(_demo(root, "spmamba"), 16.76, abs_tol=0.01)
    assert math.isclose(_demo(root, "convtasnet"), 9.40, abs_tol=0.01)
