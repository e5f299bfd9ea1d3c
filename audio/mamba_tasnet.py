"""Mamba-TasNet (Jiang, Li, Han, Mesgarani, "Speech Slytherin", arXiv 2407.09732)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.audio.blocks import (
    BiMambaStack,
    ChannelLayerNorm,
    ConvDecoder,
    ConvEncoder,
    as_waveform_batch,
)
from ssmkit.core import register_model

# (d_model = N = B, n_mamba) per published size; WSJ0-2mix SI-SNRi 19.0 / 21.4 / 22.4 / 23.7 dB.
SIZES: dict[str, tuple[int, int]] = {
    "xs": (128, 16),
    "s": (256, 16),
    "m": (256, 32),
    "l": (512, 32),
}


class MambaTasNet(nn.Module):
    """Mamba-TasNet: a TasNet whose separator is a stack of bidirectional Mamba blocks.

    Jiang et al., "Speech Slytherin: Examining the Performance and Efficiency of Mamba for Speech
    Separation, Recognition, and Synthesis", arXiv 2407.09732 (2024).

    ``Conv1d(1 -> N, 16, stride 8) + ReLU -> channel LayerNorm -> 1x1 conv N -> B -> n_mamba
    pre-norm residual BiMamba-v2 blocks (RMSNorm; d_state 16, d_conv 4, expand 2) -> 1x1 conv
    B -> n_src * N -> ReLU masks -> ConvTranspose1d(N -> 1, 16, stride 8)``.

    Args:
        n_src: number of speakers.
        n_filters: encoder channels ``N``.
        d_model: bottleneck / Mamba width ``B``.
        n_layers: number of bidirectional Mamba blocks.
        kernel_size, stride: encoder filter length and hop (16 / 8 samples).
        d_state, d_conv, expand: Mamba sizes.

    Shapes: ``(B, T)`` or ``(B, 1, T)`` -> ``(B, n_src, T)``, any ``T >= 1``.
    """

    def __init__(
        self,
        n_src: int = 2,
        n_filters: int = 128,
        d_model: int = 128,
        n_layers: int = 16,
        kernel_size: int = 16,
        stride: int = 8,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
    ) -> None:
        super().__init__()
        if n_src < 1:
            raise ValueError(f"MambaTasNet: n_src must be >= 1, got {n_src}.")
        self.n_src, self.n_filters = n_src, n_filters
        self.encoder = ConvEncoder(n_filters, kernel_size, stride)
        self.norm = ChannelLayerNorm(n_filters)
        self.bottleneck = nn.Conv1d(n_filters, d_model, 1)
        self.separator = BiMambaStack(
            d_model, n_layers, variant="v2", merge="mean", d_state=d_state, d_conv=d_conv,
            expand=expand,
        )  # fmt: skip
        self.mask_conv = nn.Conv1d(d_model, n_src * n_filters, 1)
        self.decoder = ConvDecoder(n_filters, kernel_size, stride)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """Separate ``mixture (B, T)`` or ``(B, 1, T)`` into ``(B, n_src, T)``."""
        x = as_waveform_batch(mixture, type(self).__name__)
        length = x.shape[-1]
        w = self.encoder(x)  # (B, N, F)
        h = self.bottleneck(self.norm(w))  # (B, D, F)
        h = self.separator(h.transpose(1, 2)).transpose(1, 2)
        masks = F.relu(self.mask_conv(h)).view(x.shape[0], self.n_src, self.n_filters, -1)
        est = (masks * w[:, None]).flatten(0, 1)  # (B * n_src, N, F)
        return self.decoder(est, length).view(x.shape[0], self.n_src, length)


def _example(model: nn.Module) -> tuple[torch.Tensor]:
    return (torch.randn(2, 203),)


def _make(size: str, kwargs: dict) -> MambaTasNet:
    d, n = SIZES[size]
    return MambaTasNet(**{"n_filters": d, "d_model": d, "n_layers": n, **kwargs})


_TINY = {"n_filters": 16, "d_model": 16, "n_layers": 2, "d_state": 4}


@register_model("audio.mamba_tasnet_xs", tiny=_TINY, example_inputs=_example)
def mamba_tasnet_xs(**kwargs: object) -> MambaTasNet:
    """Mamba-TasNet XS (N = B = 128, 16 BiMamba blocks, ~2.2M params)."""
    return _make("xs", kwargs)


@register_model("audio.mamba_tasnet_s", tiny=_TINY, example_inputs=_example)
def mamba_tasnet_s(**kwargs: object) -> MambaTasNet:
    """Mamba-TasNet S (N = B = 256, 16 BiMamba blocks, ~7.9M params)."""
    return _make("s", kwargs)


@register_model("audio.mamba_tasnet_m", tiny=_TINY, example_inputs=_example)
def mamba_tasnet_m(**kwargs: object) -> MambaTasNet:
    """Mamba-TasNet M (N = B = 256, 32 BiMamba blocks, ~15.6M params)."""
    return _make("m", kwargs)


@register_model("audio.mamba_tasnet_l", tiny=_TINY, example_inputs=_example)
def mamba_tasnet_l(**kwargs: object) -> MambaTasNet:
    """Mamba-TasNet L (N = B = 512, 32 BiMamba blocks, ~59.6M params)."""
    return _make("l", kwargs)
