"""Shared pieces of the segmentation networks: nnU-Net style conv blocks and the fp32 Mamba layer.

Everything here works for ``spatial_dims`` 2 or 3 and needs only torch (the SSM comes from
``ssmkit.core``), so the networks stay importable without MONAI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def check_spatial_dims(spatial_dims: int, allowed: Sequence[int] = (2, 3)) -> int:
    """Validate ``spatial_dims`` (2 for images, 3 for volumes)."""
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int):
        raise TypeError(f"spatial_dims must be an int in {tuple(allowed)}, got {spatial_dims!r}.")
    if spatial_dims not in allowed:
        raise ValueError(
            f"spatial_dims must be one of {tuple(allowed)}, got {spatial_dims}. "
            "Use 2 for (B, C, H, W) images and 3 for (B, C, D, H, W) volumes."
        )
    return spatial_dims


def check_input(
    x: torch.Tensor, spatial_dims: int, in_channels: int, divisor: Sequence[int] | int, name: str
) -> None:
    """Raise a clear error unless ``x`` is (B, in_channels, *S) with each S divisible by ``divisor``.

    Args:
        x: network input, (B, C, *S) with ``len(S) == spatial_dims``.
        spatial_dims: 2 or 3.
        in_channels: expected C.
        divisor: per-axis (or common) factor every spatial size must be a multiple of.
        name: the network's class name, for the message.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor input, got {type(x).__name__}.")
    if x.dim() != spatial_dims + 2:
        layout = "(B, C, H, W)" if spatial_dims == 2 else "(B, C, D, H, W)"
        raise ValueError(
            f"{name} with spatial_dims={spatial_dims} expects input {layout}, got shape "
            f"{tuple(x.shape)}. Add the batch/channel axes (x[None, None]) or set spatial_dims."
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built with in_channels={in_channels} but the input has "
            f"{x.shape[1]} channels (shape {tuple(x.shape)})."
        )
    divisors = [divisor] * spatial_dims if isinstance(divisor, int) else list(divisor)
    sizes = list(x.shape[2:])
    if any(s % d for s, d in zip(sizes, divisors)):
        fixed = [math.ceil(s / d) * d for s, d in zip(sizes, divisors)]
        raise ValueError(
            f"{name}: every spatial size must be a multiple of the network's total stride "
            f"{tuple(divisors)}, got spatial shape {tuple(sizes)}. Pad the input to "
            f"{tuple(fixed)} (e.g. MONAI DivisiblePad(k={tuple(divisors)})) or use "
            "sliding_window_inference with a roi_size that is a multiple of the stride."
        )


def check_not_single_voxel(x: torch.Tensor, divisor: Sequence[int] | int, name: str) -> None:
    """Raise unless the deepest feature map of ``x`` keeps more than one voxel.

    Instance norm over a single voxel is undefined in training (torch raises a bare
    "Expected more than 1 spatial element") and returns all zeros in eval, silently dropping the
    bottleneck, so both cases are refused with the fix.

    Args:
        x: network input (B, C, *S), already checked by :func:`check_input`.
        divisor: the total stride (per axis or common).
        name: the network's class name, for the message.
    """
    sizes = tuple(x.shape[2:])
    divisors = [divisor] * len(sizes) if isinstance(divisor, int) else list(divisor)
    if all(s == d for s, d in zip(sizes, divisors)):
        bigger = (2 * divisors[0], *divisors[1:])
        raise ValueError(
            f"{name}: a {sizes} input leaves a single voxel at stride {tuple(divisors)}, where "
            "instance norm is undefined; use inputs of at least twice the stride along one axis "
            f"(e.g. {'x'.join(str(b) for b in bigger)})."
        )


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    bias: bool = True,
) -> nn.Module:
    """A 'same'-padded Conv2d/Conv3d."""
    return _CONV[spatial_dims](
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias
    )


def instance_norm(spatial_dims: int, channels: int) -> nn.Module:
    """InstanceNorm with learned affine parameters (nnU-Net's default)."""
    return _INSTANCE_NORM[spatial_dims](channels, eps=1e-5, affine=True)


class ConvNormAct(nn.Sequential):
    """Conv -> InstanceNorm -> LeakyReLU(0.01), the nnU-Net building block.

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel size; padding keeps the size (up to the stride).
        stride: convolution stride (2 halves every spatial size).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
    ) -> None:
        super().__init__(
            conv(spatial_dims, in_channels, out_channels, kernel_size, stride),
            instance_norm(spatial_dims, out_channels),
            nn.LeakyReLU(0.01, inplace=True),
        )


class ResidualConvBlock(nn.Module):
    """nnU-Net ResEnc basic block: two conv-norm layers with a (projected) identity shortcut.

    ``y = LeakyReLU(norm(conv(ConvNormAct(x))) + shortcut(x))``; the shortcut is a strided 1x1
    conv + norm when the shape changes.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride)
        self.conv2 = conv(spatial_dims, out_channels, out_channels, kernel_size)
        self.norm2 = instance_norm(spatial_dims, out_channels)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(spatial_dims, in_channels, out_channels, 1, stride, bias=False),
                instance_norm(spatial_dims, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ConvStage(nn.Sequential):
    """``n_convs`` blocks; the first carries the stride (nnU-Net encoder/decoder stage).

    Args:
        residual: use :class:`ResidualConvBlock` (each counts as one block) instead of
            :class:`ConvNormAct`.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        n_convs: int = 2,
        kernel_size: int = 3,
        stride: int = 1,
        residual: bool = False,
    ) -> None:
        if n_convs < 1:
            raise ValueError(f"n_convs must be >= 1, got {n_convs}.")
        block = ResidualConvBlock if residual else ConvNormAct
        layers = [block(spatial_dims, in_channels, out_channels, kernel_size, stride)]
        layers += [
            block(spatial_dims, out_channels, out_channels, kernel_size) for _ in range(n_convs - 1)
        ]
        super().__init__(*layers)


class UpStage(nn.Module):
    """Transposed-conv upsampling by ``stride``, concatenation with the skip, then a ConvStage.

    Args:
        in_channels: channels of the coarser input.
        skip_channels: channels of the skip connection (also the output width).
        stride: upsampling factor (the stride of the matching encoder stage).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        stride: int,
        n_convs: int = 2,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.up = _CONV_T[spatial_dims](
            in_channels, skip_channels, kernel_size=stride, stride=stride, bias=False
        )
        self.convs = ConvStage(
            spatial_dims, 2 * skip_channels, skip_channels, n_convs, kernel_size, stride=1
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class MambaLayer(nn.Module):
    """U-Mamba's Mamba layer: (B, C, *S) -> (B, prod(S), C) -> LayerNorm -> Mamba -> (B, C, *S).

    Ma, Li and Wang, "U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation"
    (arXiv 2401.04722). The voxels are scanned in row-major order as one sequence with a
    unidirectional Mamba. U-Mamba needs a separate no-AMP trainer because "AMP could lead to nan in
    the Mamba module"; here the layer always runs in fp32 with autocast disabled, so it is safe
    inside ``torch.autocast`` (bf16 or fp16) and returns the input's dtype.

    Args:
        channels: C, the Mamba ``d_model``.
        d_state, d_conv, expand: Mamba hyper-parameters (U-Mamba: 16, 4, 2).
        residual: add the input back (U-Mamba has no residual; SegMamba-style layers do).
    """

    def __init__(
        self,
        channels: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        residual: bool = False,
    ) -> None:
        super().__init__()
        from ssmkit.core import Mamba

        self.norm = nn.LayerNorm(channels)
        self.mamba = Mamba(d_model=channels, d_state=d_state, d_conv=d_conv, expand=expand)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *S) -> (B, C, *S) in x's dtype."""
        shape, dtype = x.shape, x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            tokens = x.float().flatten(2).transpose(1, 2)  # (B, L, C)
            # contiguous(): the transposed view is channels-last, and oneDNN's conv backward in
            # torch 2.14.1 (CPU) corrupts the heap when channels-last and contiguous tensors mix.
            y = self.mamba(self.norm(tokens)).transpose(1, 2).reshape(shape).contiguous()
            if self.residual:
                y = y + x.float()
        return y.to(dtype)
