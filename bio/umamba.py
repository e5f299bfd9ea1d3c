"""U-Mamba: an nnU-Net style U-Net with Mamba layers (Bot: bottleneck only; Enc: every stage).

Ma, Li and Wang, "U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation",
arXiv 2401.04722. Written from the paper's description as plain MONAI-style modules: no nnU-Net
planner, any input whose spatial sizes are multiples of the total stride.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ssmkit.bio.blocks import (
    ConvStage,
    MambaLayer,
    UpStage,
    check_input,
    check_not_single_voxel,
    check_spatial_dims,
    conv,
)
from ssmkit.core.registry import register_model


def _per_stage(value: int | Sequence[int], n_stages: int, name: str) -> list[int]:
    values = [value] * n_stages if isinstance(value, int) else list(value)
    if len(values) != n_stages:
        raise ValueError(
            f"{name} must be an int or have one entry per stage ({n_stages}, the length of "
            f"channels), got {value!r}."
        )
    if any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} entries must be positive ints, got {value!r}.")
    return values


class _UMambaBase(nn.Module):
    """Shared encoder/decoder of U-Mamba Bot and Enc (see those classes)."""

    residual_encoder: bool = False

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        strides: Sequence[int] = (1, 2, 2, 2, 2),
        n_conv_per_stage: int | Sequence[int] = 2,
        n_conv_per_stage_decoder: int | Sequence[int] = 2,
        kernel_size: int = 3,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}.")
        channels, strides = list(channels), list(strides)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 stages, got {channels}.")
        if len(strides) != len(channels):
            raise ValueError(
                f"strides needs one entry per stage: len(channels)={len(channels)}, "
                f"got strides={strides}."
            )
        _per_stage(channels, len(channels), "channels")
        _per_stage(strides, len(channels), "strides")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        n_enc = _per_stage(n_conv_per_stage, len(channels), "n_conv_per_stage")
        n_dec = _per_stage(n_conv_per_stage_decoder, len(channels) - 1, "n_conv_per_stage_decoder")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.channels, self.strides = tuple(channels), tuple(strides)
        self.divisor = math.prod(strides)

        self.encoder = nn.ModuleList()
        previous = in_channels
        for width, stride, n in zip(channels, strides, n_enc):
            self.encoder.append(
                ConvStage(
                    spatial_dims, previous, width, n, kernel_size, stride, self.residual_encoder
                )
            )
            previous = width
        mamba_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand)
        self.mamba_layers = nn.ModuleDict(
            {str(i): MambaLayer(channels[i], **mamba_kwargs) for i in self._mamba_stages()}
        )
        self.decoder = nn.ModuleList(
            UpStage(
                spatial_dims, channels[i + 1], channels[i], strides[i + 1], n_dec[i], kernel_size
            )
            for i in reversed(range(len(channels) - 1))
        )
        self.head = conv(spatial_dims, channels[0], out_channels, kernel_size=1)

    def _mamba_stages(self) -> list[int]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, *S) -> logits (B, out_channels, *S); each S a multiple of the stride."""
        check_input(x, self.spatial_dims, self.in_channels, self.divisor, type(self).__name__)
        check_not_single_voxel(x, self.divisor, type(self).__name__)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if str(i) in self.mamba_layers:
                x = self.mamba_layers[str(i)](x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)


class UMambaBot(_UMambaBase):
    """U-Mamba_Bot: a plain-conv nnU-Net with one Mamba layer on the bottleneck.

    Ma, Li and Wang, arXiv 2401.04722. The bottleneck features (B, C, *S) are flattened to
    prod(S) tokens, layer-normed and mixed by a unidirectional Mamba (no residual around it),
    in fp32 even under autocast (:class:`~ssmkit.bio.blocks.MambaLayer`).

    Args:
        spatial_dims: 2 (B, C, H, W) or 3 (B, C, D, H, W).
        in_channels: input channels (modalities).
        out_channels: classes including background (logits are returned).
        channels: width of each encoder stage.
        strides: stride of each stage's first conv (one per stage; the first is usually 1).
            Inputs must have every spatial size divisible by ``prod(strides)``.
        n_conv_per_stage, n_conv_per_stage_decoder: conv blocks per stage (int or per stage).
        kernel_size: odd conv kernel size.
        d_state, d_conv, expand: Mamba hyper-parameters (paper: 16, 4, 2).
    """

    def _mamba_stages(self) -> list[int]:
        return [len(self.channels) - 1]


class UMambaEnc(_UMambaBase):
    """U-Mamba_Enc: a residual-encoder nnU-Net with a Mamba layer after every encoder stage.

    Ma, Li and Wang, arXiv 2401.04722. Same arguments as :class:`UMambaBot`. The paper switches
    small deep stages to channel tokens (which ties the network to one patch size); here every
    stage scans spatial tokens, so the network accepts any input size the strides allow.
    """

    residual_encoder = True

    def _mamba_stages(self) -> list[int]:
        return list(range(len(self.channels)))


def _example_volume(model: nn.Module) -> tuple[torch.Tensor]:
    size = 32 if model.spatial_dims == 2 else 16
    return (torch.randn(1, model.in_channels, *([size] * model.spatial_dims)),)


_TINY = dict(channels=(4, 8, 16), strides=(1, 2, 2), n_conv_per_stage=1, n_conv_per_stage_decoder=1)


@register_model(
    "bio.umamba_bot",
    tiny=dict(spatial_dims=3, d_state=4, **_TINY),
    example_inputs=_example_volume,
    description="U-Mamba_Bot (arXiv 2401.04722): nnU-Net with a Mamba bottleneck, 2-D/3-D",
)
def umamba_bot(**kwargs: object) -> UMambaBot:
    """U-Mamba_Bot with nnU-Net's 3-D full-resolution widths (32..320, 5 stages)."""
    return UMambaBot(**kwargs)  # type: ignore[arg-type]


@register_model(
    "bio.umamba_enc",
    tiny=dict(spatial_dims=2, d_state=4, **_TINY),
    example_inputs=_example_volume,
    description="U-Mamba_Enc (arXiv 2401.04722): residual nnU-Net, Mamba after every stage",
)
def umamba_enc(**kwargs: object) -> UMambaEnc:
    """U-Mamba_Enc with nnU-Net's 3-D full-resolution widths (32..320, 5 stages)."""
    return UMambaEnc(**kwargs)  # type: ignore[arg-type]
