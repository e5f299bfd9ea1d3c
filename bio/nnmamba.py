"""nnMamba: a residual 3-D CNN whose stages share one flip-averaged Mamba layer.

Gong, Kang, Wang, Wang, Zhang and Li, "nnMamba: 3D Biomedical Image Segmentation, Classification
and Landmark Detection with State Space Model", ISBI 2025 (arXiv 2402.03526). Written from the
paper's description as a MONAI-style module (2-D or 3-D, any input whose sizes are multiples of
16).
"""

from __future__ import annotations

import torch
from torch import nn

from ssmkit.bio.blocks import check_input, check_not_single_voxel, check_spatial_dims
from ssmkit.core.registry import register_model

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _conv_bn_relu(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        _CONV[spatial_dims](
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
        ),
        _BATCH_NORM[spatial_dims](out_channels),
        nn.ReLU(inplace=True),
    )


class FlipMambaLayer(nn.Module):
    """nnMamba's Mamba layer: 1x1 conv-BN-ReLU -> one Mamba over 4 flips (mean) -> + -> 1x1 conv.

    The (B, C, *S) map becomes L = prod(S) tokens of width C; the same Mamba reads them as they
    are, with the token order reversed, with the channel order reversed, and with both; each
    output is flipped back and the four are averaged, added to the projected input, and mixed by
    a second 1x1 conv-BN-ReLU. The Mamba runs in fp32 with autocast disabled.

    Args:
        spatial_dims: 2 or 3.
        channels: C, the Mamba ``d_model``.
        d_state, d_conv, expand: Mamba hyper-parameters.
    """

    def __init__(
        self, spatial_dims: int, channels: int, d_state: int = 16, d_conv: int = 4, expand: int = 2
    ) -> None:
        super().__init__()
        from ssmkit.core import Mamba

        self.proj_in = _conv_bn_relu(spatial_dims, channels, channels, kernel_size=1)
        self.mamba = Mamba(d_model=channels, d_state=d_state, d_conv=d_conv, expand=expand)
        self.proj_out = _conv_bn_relu(spatial_dims, channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *S) -> (B, C, *S)."""
        x = self.proj_in(x)
        shape, dtype = x.shape, x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            tokens = x.float().flatten(2).transpose(1, 2)  # (B, L, C)
            mixed = torch.zeros_like(tokens)
            # the four orders: as is, tokens reversed, channels reversed, both; a reversed token
            # order is Mamba's reverse scan (no flipped copies of the sequence)
            for flip_channels in (False, True):
                seq = tokens.flip(2) if flip_channels else tokens
                for reverse in (False, True):
                    out = self.mamba(seq, reverse=reverse)
                    mixed = mixed + (out.flip(2) if flip_channels else out)
            # contiguous(): a channels-last view must not reach the convolutions (oneDNN crash,
            # see tests/bio/test_onednn_regression.py).
            y = (mixed / 4).transpose(1, 2).reshape(shape).contiguous()
        return self.proj_out(y.to(dtype) + x)


class _ResBlock(nn.Module):
    """ResNet basic block; with ``mamba`` the stage's shared layer joins the first conv's output.

    ``y = ReLU(BN(conv2(ReLU(BN(conv1(x))) + mamba(x))) + shortcut(x))``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        mamba: FlipMambaLayer | None = None,
    ) -> None:
        super().__init__()
        conv = _CONV[spatial_dims]
        self.conv1 = _conv_bn_relu(spatial_dims, in_channels, out_channels, 3, stride)
        self.conv2 = nn.Sequential(
            conv(out_channels, out_channels, 3, padding=1, bias=False),
            _BATCH_NORM[spatial_dims](out_channels),
        )
        self.mamba = mamba
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride, bias=False),
                _BATCH_NORM[spatial_dims](out_channels),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.mamba is not None:
            out = out + self.mamba(x)
        return self.act(self.conv2(out) + self.shortcut(x))


class NNMamba(nn.Module):
    """nnMamba segmentation network (Gong et al., ISBI 2025, arXiv 2402.03526).

    A stride-2 conv-BN-ReLU stem, three residual stages (each halves the size and doubles the
    width; the first block is strided, the other ``blocks - 1`` blocks add the stage's single,
    shared :class:`FlipMambaLayer`), and a decoder that upsamples (trilinear / bilinear), concatenates
    the skip and applies two conv-BN-ReLU, ending with a final upsampling and a 1x1 head (run in
    the equivalent order head-then-upsampling, which interpolates ``out_channels`` maps instead
    of ``channels``).

    Args:
        spatial_dims: 3 (the paper) or 2.
        in_channels: input channels.
        out_channels: classes (logits are returned).
        channels: stem width; the stages use 2x, 4x, 8x (paper: 32).
        blocks: residual blocks per stage (paper: 3).
        d_state, d_conv, expand: Mamba hyper-parameters.

    Input (B, in_channels, *S) with every S a multiple of 16; output (B, out_channels, *S).
    """

    divisor = 16

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: int = 32,
        blocks: int = 3,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        for arg, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("channels", channels),
            ("blocks", blocks),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}.")
        self.in_channels, self.out_channels = in_channels, out_channels
        widths = [channels, 2 * channels, 4 * channels, 8 * channels]
        self.stem = _conv_bn_relu(spatial_dims, in_channels, channels, 3, stride=2)
        self.stages = nn.ModuleList()
        for cin, cout in zip(widths[:-1], widths[1:]):
            shared = FlipMambaLayer(spatial_dims, cout, d_state, d_conv, expand)
            stage = [_ResBlock(spatial_dims, cin, cout, stride=2)]
            stage += [_ResBlock(spatial_dims, cout, cout, mamba=shared) for _ in range(blocks - 1)]
            self.stages.append(nn.Sequential(*stage))
        self.decoder = nn.ModuleList(
            nn.Sequential(
                _conv_bn_relu(spatial_dims, widths[i + 1] + widths[i], widths[i]),
                _conv_bn_relu(spatial_dims, widths[i], widths[i]),
            )
            for i in (2, 1, 0)
        )
        self.head = _CONV[spatial_dims](channels, out_channels, 1)
        self._mode = "trilinear" if spatial_dims == 3 else "bilinear"

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2, mode=self._mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, *S) -> logits (B, out_channels, *S); each S a multiple of 16."""
        check_input(x, self.spatial_dims, self.in_channels, self.divisor, type(self).__name__)
        check_not_single_voxel(x, self.divisor, type(self).__name__)
        skips = [self.stem(x)]
        for stage in self.stages:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for block in self.decoder:
            y = block(torch.cat([self._up(y), skips.pop()], dim=1))
        # head(up(y)) == up(head(y)): the 1x1 head and the interpolation are both linear and the
        # interpolation weights sum to 1, so the head runs first, on 1/8 of the voxels, and only
        # out_channels maps (not `channels`) are upsampled to full size.
        return self._up(self.head(y))


@register_model(
    "bio.nnmamba",
    tiny=dict(spatial_dims=3, channels=4, blocks=2, d_state=4),
    example_inputs=lambda m: (
        torch.randn(1, m.in_channels, *([32] + [16] * (m.spatial_dims - 1))),
    ),
    description="nnMamba (ISBI 2025): ResNet stages with a shared flip-averaged Mamba, 3-D/2-D",
)
def nnmamba(**kwargs: object) -> NNMamba:
    """nnMamba with the paper's segmentation settings (channels 32, 3 blocks per stage)."""
    return NNMamba(**kwargs)  # type: ignore[arg-type]
