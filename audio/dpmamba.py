"""DPMamba: dual-path Mamba speech separation (Jiang, Han, Mesgarani, arXiv 2403.18257)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.audio.blocks import GlobalLayerNorm, MaskingTasNet, bimamba_stack, register_sizes

# published sizes (N, dual-path layers); WSJ0-2mix SI-SNRi 19.2 / 21.4 / 22.6 / 23.4 dB,
# 2.3M / 8.1M / 15.9M / 59.8M parameters.
SIZES: dict[str, dict] = {
    "xs": {"n_filters": 128, "n_layers": 8},
    "s": {"n_filters": 256, "n_layers": 8},
    "m": {"n_filters": 256, "n_layers": 16},
    "l": {"n_filters": 512, "n_layers": 16},
}


def chunk(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int]:
    """Split channels-last frames ``(B, L, N)`` into 50 %-overlapping chunks ``(B, S, size, N)``.

    DPRNN segmentation: ``size // 2`` zeros on both ends plus ``gap`` on the right for a whole
    number of hops; chunk ``s`` is hop segments ``s`` and ``s + 1`` (no ``unfold``, one copy).
    Returns the chunks and ``gap``, which :func:`overlap_add` removes.
    """
    hop = size // 2
    batch, length, channels = x.shape
    gap = -length % hop
    segs = F.pad(x, (0, 0, hop, gap + hop)).view(batch, -1, hop, channels)  # (B, S + 1, hop, N)
    return torch.cat([segs[:, :-1], segs[:, 1:]], dim=2), gap


def overlap_add(chunks: torch.Tensor, gap: int) -> torch.Tensor:
    """Inverse of :func:`chunk` up to the 2x overlap sum: ``(B, S, size, N) -> (B, L, N)``."""
    batch, _, size, channels = chunks.shape
    hop = size // 2
    out = F.pad(chunks[:, :, :hop], (0, 0, 0, 0, 0, 1)) + F.pad(
        chunks[:, :, hop:], (0, 0, 0, 0, 1, 0)
    )
    out = out.view(batch, -1, channels)  # (B, (S + 1) * hop, N)
    return out[:, hop : out.shape[1] - hop - gap]


class DualPathBlock(nn.Module):
    """One dual-path layer: intra-chunk then inter-chunk bidirectional Mamba, each followed by a
    global LayerNorm (SpeechBrain's dual computation block with Mamba paths; Jiang, Han,
    Mesgarani, arXiv 2403.18257):

        intra = gLN(intra_stack(x)) (+ x if skip_around_intra)
        out = intra + gLN(inter_stack(intra))

    The authors' configurations set ``skip_around_intra`` to False (the stacks keep their own
    pre-norm residuals); True is SpeechBrain's default, as in SepFormer.

    Shapes: ``(B, S, K, N) -> (B, S, K, N)`` (chunks, frames per chunk, channels).
    """

    def __init__(
        self,
        channels: int,
        n_mamba: int = 1,
        skip_around_intra: bool = False,
        **mamba_kwargs: object,
    ) -> None:
        super().__init__()
        self.skip_around_intra = skip_around_intra
        self.intra = bimamba_stack(channels, n_mamba, **mamba_kwargs)  # type: ignore[arg-type]
        self.inter = bimamba_stack(channels, n_mamba, **mamba_kwargs)  # type: ignore[arg-type]
        self.intra_norm = GlobalLayerNorm(channels)
        self.inter_norm = GlobalLayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, k, n = x.shape
        intra = self.intra(x.reshape(b * s, k, n)).view(b, s, k, n)  # along each chunk (a view)
        intra = self.intra_norm(intra)
        if self.skip_around_intra:
            intra = intra + x
        inter = self.inter(intra.transpose(1, 2).reshape(b * k, s, n))  # across chunks
        return intra + self.inter_norm(inter.view(b, k, s, n)).transpose(1, 2)


class DPMamba(MaskingTasNet):
    """DPMamba: a DPRNN-style dual-path separator whose paths are bidirectional Mamba blocks.

    Jiang, Han, Mesgarani, "Dual-path Mamba: Short and Long-term Bidirectional Selective
    Structured State Space Models for Speech Separation", arXiv 2403.18257 (2024).

    TasNet encoder (k16 / s8) -> global LayerNorm -> 1x1 conv -> chunks of ``chunk_size`` frames
    with 50 % overlap -> ``n_layers`` x (intra-chunk BiMamba, inter-chunk BiMamba) -> PReLU ->
    1x1 conv to ``n_src * N`` -> overlap-add -> ``tanh * sigmoid`` output gate -> 1x1 conv ->
    ReLU masks -> transposed-conv decoder. Everything between encoder and decoder runs
    channels-last (1x1 convs as ``nn.Linear``, same parameters), so the intra-chunk path needs
    no copy and the inter-chunk path one transpose.

    Args:
        n_src: speakers. n_filters: ``N``. n_layers: dual-path layers.
        chunk_size: ``K`` frames per chunk (250 in the paper); must be even.
        n_mamba: BiMamba blocks per path (1 in the paper).
        kernel_size, stride: encoder. d_state, d_conv, expand: Mamba sizes.
        input_norm: ``"gln"`` (the authors' ``GroupNorm(1, N)``) or ``"cln"`` (per frame).
        skip_around_intra: residual around the intra path (False in the authors' configs).
        Before 2026-11-24 ssmkit built ``"cln"`` and True, which left the "output the mixture"
        plateau ~400 steps later (benchmarks/results/separation.md);
        :func:`ssmkit.audio.separate.load_separator` rebuilds that wiring for such checkpoints.

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
        input_norm: str = "gln",
        skip_around_intra: bool = False,
    ) -> None:
        if chunk_size < 2 or chunk_size % 2:
            raise ValueError(f"DPMamba: chunk_size must be an even number >= 2, got {chunk_size}.")
        super().__init__(n_src, n_filters, kernel_size, stride, input_norm)
        self.chunk_size = chunk_size
        self.bottleneck = nn.Linear(n_filters, n_filters, bias=False)
        mamba = {"d_state": d_state, "d_conv": d_conv, "expand": expand}
        self.layers = nn.ModuleList(
            DualPathBlock(n_filters, n_mamba, skip_around_intra, **mamba) for _ in range(n_layers)
        )
        self.prelu = nn.PReLU()
        self.to_sources = nn.Linear(n_filters, n_src * n_filters)
        self.gate_tanh = nn.Linear(n_filters, n_filters)
        self.gate_sigmoid = nn.Linear(n_filters, n_filters)
        self.end_proj = nn.Linear(n_filters, n_filters, bias=False)

    def masks(self, w: torch.Tensor) -> torch.Tensor:
        """``(B, F, N)`` -> ReLU masks ``(B, F, n_src, N)``."""
        h, gap = chunk(self.bottleneck(w), self.chunk_size)  # (B, S, K, N)
        for layer in self.layers:
            h = layer(h)
        h = overlap_add(self.to_sources(self.prelu(h)), gap)  # (B, F, n_src * N)
        h = h.unflatten(-1, (self.n_src, self.n_filters))
        h = torch.tanh(self.gate_tanh(h)) * torch.sigmoid(self.gate_sigmoid(h))
        return F.relu(self.end_proj(h))


register_sizes(
    "dpmamba", "DPMamba", DPMamba, SIZES,
    tiny={"n_filters": 16, "n_layers": 1, "chunk_size": 8, "d_state": 4},
)  # fmt: skip
