"""Pieces shared by the separators: waveform checks, the TasNet conv encoder/decoder, norms and
the pre-norm bidirectional Mamba residual stack (Mamba-TasNet / DPMamba, Jiang et al. 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import BiMamba, RMSNorm


def as_waveform_batch(x: torch.Tensor, owner: str) -> torch.Tensor:
    """Accept ``(B, T)`` or ``(B, 1, T)``; return ``(B, T)``. Anything else raises ``ValueError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: expected a waveform tensor (B, T), got {type(x).__name__}.")
    if x.dim() == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 2:
        raise ValueError(
            f"{owner}: the mixture must be (B, T) or (B, 1, T) (mono); got {tuple(x.shape)}. "
            "For one utterance add a batch axis (x[None]); downmix stereo explicitly first."
        )
    if x.shape[-1] == 0:
        raise ValueError(f"{owner}: the mixture is empty (T = 0).")
    if not x.is_floating_point():
        raise TypeError(f"{owner}: the mixture must be floating point, got {x.dtype}.")
    return x


class ConvEncoder(nn.Module):
    """TasNet learned filterbank: ``Conv1d(1 -> N, kernel, stride) + ReLU`` (Luo & Mesgarani 2019).

    Any length works: the waveform is padded by ``kernel - stride`` on the left and up to a whole
    number of hops on the right; :class:`ConvDecoder` removes exactly that padding.
    """

    def __init__(self, n_filters: int, kernel_size: int = 16, stride: int = 8) -> None:
        super().__init__()
        if kernel_size % stride:
            raise ValueError(
                f"ConvEncoder: kernel_size ({kernel_size}) must be a multiple of stride ({stride})."
            )
        self.kernel_size, self.stride = kernel_size, stride
        self.conv = nn.Conv1d(1, n_filters, kernel_size, stride=stride, bias=False)

    def padding(self, length: int) -> tuple[int, int]:
        left = self.kernel_size - self.stride
        total = left + length
        frames = max(1, -(-(total - self.kernel_size) // self.stride) + 1)
        right = (frames - 1) * self.stride + self.kernel_size - total
        return left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T) -> (B, N, F)``."""
        left, right = self.padding(x.shape[-1])
        return F.relu(self.conv(F.pad(x[:, None], (left, right))))


class ConvDecoder(nn.Module):
    """Transposed conv ``N -> 1`` (overlap-add of learned basis), cropped to the input length."""

    def __init__(self, n_filters: int, kernel_size: int = 16, stride: int = 8) -> None:
        super().__init__()
        self.left = kernel_size - stride
        self.deconv = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=stride, bias=False)

    def forward(self, w: torch.Tensor, length: int) -> torch.Tensor:
        """``(B, N, F) -> (B, T)`` with ``T = length``."""
        return self.deconv(w)[:, 0, self.left : self.left + length]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, L)`` (Conv-TasNet's "cLN")."""

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class BiMambaStack(nn.Module):
    """``n_layers`` pre-norm residual bidirectional Mamba blocks plus a final RMSNorm.

    Each block is ``x = x + BiMamba(RMSNorm(x))`` (mamba_ssm's "add -> norm -> mixer" Block with a
    Vim-v2 bidirectional mixer, as in Mamba-TasNet and DPMamba; Jiang et al., arXiv 2407.09732).

    Args:
        d_model: width ``D``.
        n_layers: number of blocks.
        variant, merge: :class:`ssmkit.core.BiMamba` form (Mamba-TasNet: ``"v2"``, ``"mean"``).
        **mamba_kwargs: ``d_state``, ``d_conv``, ``expand``, ...

    Shapes: ``(B, L, D) -> (B, L, D)``.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        variant: str = "v2",
        merge: str = "mean",
        **mamba_kwargs: object,
    ) -> None:
        super().__init__()
        self.norms = nn.ModuleList(RMSNorm(d_model) for _ in range(n_layers))
        self.mixers = nn.ModuleList(
            BiMamba(d_model, variant=variant, merge=merge, layer_idx=i, **mamba_kwargs)
            for i in range(n_layers)
        )
        self.norm_f = RMSNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            x = x + mixer(norm(x))
        return self.norm_f(x)
