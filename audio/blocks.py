"""Pieces shared by the separators: waveform checks, the TasNet conv encoder/decoder, and the
masking TasNet skeleton that Mamba-TasNet and DPMamba fill with their separators (Luo & Mesgarani
2019; Jiang et al. 2024). The bidirectional Mamba stacks themselves come from ``ssmkit.core``
(:func:`bimamba_stack`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import SequenceBackbone, register_model


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


def register_sizes(
    family: str, title: str, cls: type[nn.Module], sizes: dict[str, dict], tiny: dict
) -> None:
    """Register ``audio.<family>_<size>`` for each published size (keyword overrides win).

    Args:
        family: registry family, e.g. ``"mamba_tasnet"``.
        title: human name for the description, e.g. ``"Mamba-TasNet"``.
        cls: the separator class. sizes: ``{size: constructor kwargs}``. tiny: test-sweep kwargs.
    """

    def example(model: nn.Module) -> tuple[torch.Tensor]:
        return (torch.randn(2, 203),)

    def builder(defaults: dict) -> Callable[..., nn.Module]:
        def factory(**kwargs: object) -> nn.Module:
            return cls(**{**defaults, **kwargs})

        return factory

    for size, defaults in sizes.items():
        described = ", ".join(f"{k} {v}" for k, v in defaults.items())
        register_model(
            f"audio.{family}_{size}",
            tiny=tiny,
            example_inputs=example,
            description=f"{title} {size.upper()} ({described})",
        )(builder(defaults))


def bimamba_stack(
    d_model: int, n_layers: int, d_state: int = 16, d_conv: int = 4, expand: float = 2
) -> SequenceBackbone:
    """``n_layers`` pre-norm residual Vim-v2 bidirectional Mamba blocks plus a final RMSNorm.

    The separator of Mamba-TasNet and the paths of DPMamba (Jiang et al., arXiv 2407.09732):
    mamba_ssm's "add -> norm -> mixer" blocks with shared in/out projections and the two
    directions averaged, i.e. :class:`ssmkit.core.SequenceBackbone` with ``mixer="bimamba"``.

    Shapes: ``(B, L, D) -> (B, L, D)``.
    """
    mixer = {"variant": "v2", "merge": "mean", "d_state": d_state, "d_conv": d_conv}
    return SequenceBackbone(
        d_model, n_layers, mixer="bimamba", mixer_kwargs=mixer | {"expand": expand}
    )


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


class GlobalLayerNorm(nn.Module):
    """``GroupNorm(1, N)`` of channels-last ``(B, ..., N)``: statistics over everything but the batch,
    a per-channel affine (Conv-TasNet's "gLN"; Luo & Mesgarani 2019).
    """

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[1:], eps=self.eps), self.weight)


INPUT_NORMS = ("cln", "gln")


class MaskingTasNet(nn.Module):
    """The TasNet skeleton: encoder, input norm, separator-made masks, masked decoding.

    Luo & Mesgarani, "Conv-TasNet", IEEE/ACM TASLP 27(8), 2019; the skeleton of Mamba-TasNet and
    DPMamba (Jiang et al., arXiv 2407.09732 and 2403.18257).

    ``w = ReLU(Conv1d(1 -> N, k, s))(x)``; ``m = masks(norm(w))``; ``s_i = Deconv(m_i * w)``.
    ``input_norm`` picks the norm: ``"cln"`` normalises each frame over its ``N`` channels
    (Mamba-TasNet's ChannelwiseLayerNorm), ``"gln"`` the whole utterance over frames and channels
    (``GroupNorm(1, N)``, the input norm of SpeechBrain's dual-path model and so of DPMamba), which
    keeps the frames' relative loudness. Both have ``N`` weights and ``N`` biases named
    ``norm.weight`` / ``norm.bias``.
    Subclasses implement :meth:`masks` on channels-last frames (``(B, F, N) -> (B, F, n_src, N)``,
    non-negative), so the stacks of ``ssmkit.core`` run on ``(B, L, D)`` without transposes.

    Shapes: ``(B, T)`` or ``(B, 1, T)`` -> ``(B, n_src, T)``, any ``T >= 1``.
    """

    def __init__(
        self,
        n_src: int,
        n_filters: int,
        kernel_size: int = 16,
        stride: int = 8,
        input_norm: str = "cln",
    ) -> None:
        super().__init__()
        if n_src < 1:
            raise ValueError(f"{type(self).__name__}: n_src must be >= 1, got {n_src}.")
        if input_norm not in INPUT_NORMS:
            raise ValueError(
                f"{type(self).__name__}: input_norm must be one of {INPUT_NORMS}, got "
                f"{input_norm!r}."
            )
        self.n_src, self.n_filters = n_src, n_filters
        self.encoder = ConvEncoder(n_filters, kernel_size, stride)
        self.norm: nn.Module = (
            nn.LayerNorm(n_filters, eps=1e-8) if input_norm == "cln" else GlobalLayerNorm(n_filters)
        )
        self.decoder = ConvDecoder(n_filters, kernel_size, stride)

    def masks(self, w: torch.Tensor) -> torch.Tensor:
        """``(B, F, N)`` normalised encoder frames -> ``(B, F, n_src, N)`` masks."""
        raise NotImplementedError

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """Separate ``mixture (B, T)`` or ``(B, 1, T)`` into ``(B, n_src, T)``."""
        x = as_waveform_batch(mixture, type(self).__name__)
        batch, length = x.shape
        w = self.encoder(x).transpose(1, 2)  # (B, F, N), a view
        masks = self.masks(self.norm(w))  # (B, F, n_src, N)
        est = (masks * w[:, :, None]).permute(0, 2, 3, 1)  # (B, n_src, N, F)
        est = est.reshape(batch * self.n_src, self.n_filters, -1)
        return self.decoder(est, length).view(batch, self.n_src, length)
