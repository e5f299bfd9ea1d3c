"""DPMamba: dual-path Mamba speech separation (Jiang, Han, Mesgarani, arXiv 2403.18257)."""

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

# (N, dual-path layers) per published size; WSJ0-2mix SI-SNRi 19.2 / 21.4 / 22.6 / 23.4 dB.
SIZES: dict[str, tuple[int, int]] = {"xs": (128, 8), "s": (256, 8), "m": (256, 16), "l": (512, 16)}


def chunk(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int]:
    """Split ``(B, N, L)`` into 50 %-overlapping chunks ``(B, N, size, S)`` (DPRNN segmentation).

    ``size // 2`` zeros go on both ends, plus enough on the right for a whole number of hops.
    Returns the chunks and the right-hand padding ``gap`` that :func:`overlap_add` removes.
    """
    hop = size // 2
    length = x.shape[-1]
    gap = (size - (hop + length % size) % size) % size
    x = F.pad(x, (hop, gap + hop))
    return x.unfold(-1, size, hop).transpose(-1, -2), gap  # (B, N, size, S)


def overlap_add(chunks: torch.Tensor, gap: int) -> torch.Tensor:
    """Inverse of :func:`chunk` up to the 2x overlap sum: ``(B, N, size, S) -> (B, N, L)``."""
    b, n, size, s = chunks.shape
    hop = size // 2
    total = (s - 1) * hop + size
    out = F.fold(
        chunks.reshape(b, n * size, s), output_size=(1, total), kernel_size=(1, size),
        stride=(1, hop),
    )  # fmt: skip
    return out.view(b, n, total)[..., hop : total - hop - gap]


class DualPathBlock(nn.Module):
    """One dual-path layer: intra-chunk then inter-chunk bidirectional Mamba, each followed by a
    GroupNorm(1) and a residual connection (SpeechBrain's Dual_Path_Model with Mamba paths).

    Shapes: ``(B, N, K, S) -> (B, N, K, S)``.
    """

    def __init__(self, channels: int, n_mamba: int = 1, **mamba_kwargs: object) -> None:
        super().__init__()
        self.intra = BiMambaStack(channels, n_mamba, **mamba_kwargs)
        self.inter = BiMambaStack(channels, n_mamba, **mamba_kwargs)
        self.intra_norm = nn.GroupNorm(1, channels, eps=1e-8)
        self.inter_norm = nn.GroupNorm(1, channels, eps=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, k, s = x.shape
        intra = self.intra(x.permute(0, 3, 2, 1).reshape(b * s, k, n))  # along the chunk
        intra = intra.view(b, s, k, n).permute(0, 3, 2, 1)
        x = x + self.intra_norm(intra)
        inter = self.inter(x.permute(0, 2, 3, 1).reshape(b * k, s, n))  # across chunks
        inter = inter.view(b, k, s, n).permute(0, 3, 1, 2)
        return x + self.inter_norm(inter)


class DPMamba(nn.Module):
    """DPMamba: a DPRNN-style dual-path separator whose paths are bidirectional Mamba blocks.

    Jiang, Han, Mesgarani, "Dual-path Mamba: Short and Long-term Bidirectional Selective
    Structured State Space Models for Speech Separation", arXiv 2403.18257 (2024).

    TasNet encoder (k16 / s8) -> channel LayerNorm -> 1x1 conv -> chunks of ``chunk_size`` frames
    with 50 % overlap -> ``n_layers`` x (intra-chunk BiMamba, inter-chunk BiMamba) -> PReLU ->
    1x1 conv to ``n_src * N`` -> overlap-add -> ``tanh * sigmoid`` output gate -> 1x1 conv ->
    ReLU masks -> transposed-conv decoder.

    Args:
        n_src: speakers. n_filters: ``N``. n_layers: dual-path layers.
        chunk_size: ``K`` frames per chunk (250 in the paper); must be even.
        n_mamba: BiMamba blocks per path (1 in the paper).
        kernel_size, stride: encoder. d_state, d_conv, expand: Mamba sizes.

    Shapes: ``(B, T)`` or ``(B, 1, T)`` -> ``(B, n_src, T)``, any ``T >= 1``.
    """

    def __init__(
        self,
        n_src: int = 2,
        n_filters: int = 128,
        n_layers: int = 8,
        chunk_size: int = 250,
        n_mamba: int = 1,
        kernel_size: int = 16,
        stride: int = 8,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
    ) -> None:
        super().__init__()
        if chunk_size < 2 or chunk_size % 2:
            raise ValueError(f"DPMamba: chunk_size must be an even number >= 2, got {chunk_size}.")
        self.n_src, self.n_filters, self.chunk_size = n_src, n_filters, chunk_size
        self.encoder = ConvEncoder(n_filters, kernel_size, stride)
        self.norm = ChannelLayerNorm(n_filters)
        self.bottleneck = nn.Conv1d(n_filters, n_filters, 1, bias=False)
        mamba = {"d_state": d_state, "d_conv": d_conv, "expand": expand}
        self.layers = nn.ModuleList(
            DualPathBlock(n_filters, n_mamba, **mamba) for _ in range(n_layers)
        )
        self.prelu = nn.PReLU()
        self.to_sources = nn.Conv2d(n_filters, n_src * n_filters, 1)
        self.gate_tanh = nn.Conv1d(n_filters, n_filters, 1)
        self.gate_sigmoid = nn.Conv1d(n_filters, n_filters, 1)
        self.end_conv = nn.Conv1d(n_filters, n_filters, 1, bias=False)
        self.decoder = ConvDecoder(n_filters, kernel_size, stride)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """Separate ``mixture (B, T)`` or ``(B, 1, T)`` into ``(B, n_src, T)``."""
        x = as_waveform_batch(mixture, type(self).__name__)
        batch, length = x.shape
        w = self.encoder(x)  # (B, N, F)
        frames = w.shape[-1]
        h, gap = chunk(self.bottleneck(self.norm(w)), self.chunk_size)  # (B, N, K, S)
        for layer in self.layers:
            h = layer(h)
        h = self.to_sources(self.prelu(h))  # (B, n_src * N, K, S)
        k, s = h.shape[-2:]
        h = overlap_add(h.reshape(batch * self.n_src, self.n_filters, k, s), gap)
        h = h[..., :frames]
        h = torch.tanh(self.gate_tanh(h)) * torch.sigmoid(self.gate_sigmoid(h))
        masks = F.relu(self.end_conv(h)).view(batch, self.n_src, self.n_filters, frames)
        est = (masks * w[:, None]).flatten(0, 1)
        return self.decoder(est, length).view(batch, self.n_src, length)


def _example(model: nn.Module) -> tuple[torch.Tensor]:
    return (torch.randn(2, 203),)


def _make(size: str, kwargs: dict) -> DPMamba:
    n, layers = SIZES[size]
    return DPMamba(**{"n_filters": n, "n_layers": layers, **kwargs})


_TINY = {"n_filters": 16, "n_layers": 1, "chunk_size": 8, "d_state": 4}


@register_model("audio.dpmamba_xs", tiny=_TINY, example_inputs=_example)
def dpmamba_xs(**kwargs: object) -> DPMamba:
    """DPMamba XS (N = 128, 8 dual-path layers, ~2.3M params)."""
    return _make("xs", kwargs)


@register_model("audio.dpmamba_s", tiny=_TINY, example_inputs=_example)
def dpmamba_s(**kwargs: object) -> DPMamba:
    """DPMamba S (N = 256, 8 dual-path layers, ~8.1M params)."""
    return _make("s", kwargs)


@register_model("audio.dpmamba_m", tiny=_TINY, example_inputs=_example)
def dpmamba_m(**kwargs: object) -> DPMamba:
    """DPMamba M (N = 256, 16 dual-path layers, ~15.9M params)."""
    return _make("m", kwargs)


@register_model("audio.dpmamba_l", tiny=_TINY, example_inputs=_example)
def dpmamba_l(**kwargs: object) -> DPMamba:
    """DPMamba L (N = 512, 16 dual-path layers, ~59.8M params)."""
    return _make("l", kwargs)
