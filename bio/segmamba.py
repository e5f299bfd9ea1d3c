"""SegMamba: tri-oriented Mamba encoder with gated spatial convolution and a UNETR decoder.

Xing, Ye, Yang, Cheng, Zhu, Zhang and Fan, "SegMamba: Long-range Sequential Modeling Mamba For 3D
Medical Image Segmentation", MICCAI 2024 (arXiv 2401.13560). Written from the paper's description;
the decoder uses MONAI's ``UnetrBasicBlock`` / ``UnetrUpBlock`` / ``UnetOutBlock`` as SegMamba does.
The inter-slice scan of the tri-oriented Mamba takes its slice count from the runtime depth, so
any input whose sizes are multiples of 16 works (the original is hard-wired to 128^3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssmkit.bio.blocks import check_input, check_not_single_voxel, check_spatial_dims
from ssmkit.core.optional import require
from ssmkit.core.registry import register_model


def _conv_in_relu(channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2),
        nn.InstanceNorm3d(channels, affine=True),
        nn.ReLU(inplace=True),
    )


class GatedSpatialConv(nn.Module):
    """SegMamba's gated spatial convolution (GSC) in the form of the authors' code.

    ``y = P4( P2(P1(x)) + P3(x) ) + x`` with P1, P2 = Conv3^3-IN-ReLU and P3, P4 = Conv1^3-IN-ReLU
    (the paper's Fig. 3 draws the two branches multiplied; the released code adds them).

    Args:
        channels: C; x is (B, C, D, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj1 = _conv_in_relu(channels, 3)
        self.proj2 = _conv_in_relu(channels, 3)
        self.proj3 = _conv_in_relu(channels, 1)
        self.proj4 = _conv_in_relu(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj4(self.proj2(self.proj1(x)) + self.proj3(x)) + x


class ToMLayer(nn.Module):
    """LayerNorm -> tri-oriented Mamba (forward, reverse, inter-slice) -> + residual, in fp32.

    Args:
        channels: C, the Mamba ``d_model``; x is (B, C, D, H, W).
        d_state, d_conv, expand: Mamba hyper-parameters.
    """

    def __init__(self, channels: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        from ssmkit.core import TriOrientedMamba

        self.norm = nn.LayerNorm(channels)
        self.mixer = TriOrientedMamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, D, H, W) -> same shape and dtype."""
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            x32 = x.float()
            normed = self.norm(x32.movedim(1, -1)).movedim(-1, 1)
            y = self.mixer(normed) + x32
        return y.to(dtype)


class _ChannelMLP(nn.Sequential):
    """InstanceNorm then a 1x1x1 conv MLP (C -> 2C -> C, GELU) on each encoder output."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.InstanceNorm3d(channels, affine=True),
            nn.Conv3d(channels, 2 * channels, 1),
            nn.GELU(),
            nn.Conv3d(2 * channels, channels, 1),
        )


class SegMambaEncoder(nn.Module):
    """Stem Conv3d(k7, s2) then 4 stages of [downsample] -> GSC -> ToM layers -> norm + MLP output.

    Returns four feature maps at strides 2, 4, 8, 16 with ``feature_size`` channels.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: Sequence[int],
        depths: Sequence[int],
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        widths = list(feature_size)
        self.stem = nn.Conv3d(in_channels, widths[0], kernel_size=7, stride=2, padding=3)
        self.downsample = nn.ModuleList(
            nn.Sequential(
                nn.InstanceNorm3d(widths[i - 1], affine=True),
                nn.Conv3d(widths[i - 1], widths[i], kernel_size=2, stride=2),
            )
            for i in range(1, len(widths))
        )
        self.gsc = nn.ModuleList(GatedSpatialConv(w) for w in widths)
        self.stages = nn.ModuleList(
            nn.Sequential(*(ToMLayer(w, d_state, d_conv, expand) for _ in range(depth)))
            for w, depth in zip(widths, depths)
        )
        self.outputs = nn.ModuleList(_ChannelMLP(w) for w in widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, (gsc, stage, output) in enumerate(zip(self.gsc, self.stages, self.outputs)):
            x = self.stem(x) if i == 0 else self.downsample[i - 1](x)
            x = stage(gsc(x))
            outs.append(output(x))
        return outs


class SegMamba(nn.Module):
    """SegMamba for 3-D volumes (Xing et al., MICCAI 2024, arXiv 2401.13560).

    A stride-2 7^3 stem and four encoder stages (downsample, gated spatial convolution, ``depths``
    tri-oriented Mamba layers, channel MLP) feed a UNETR-style decoder (MONAI UnetrBasicBlock on the
    raw input and on each encoder output, UnetrUpBlock x4, UnetOutBlock). The Mamba layers run in
    fp32 under autocast.

    Args:
        spatial_dims: must be 3 (the tri-oriented scan is defined on volumes).
        in_channels: input channels (modalities; BraTS: 4).
        out_channels: classes (logits are returned).
        feature_size: widths of the 4 encoder stages (paper: 48, 96, 192, 384).
        depths: tri-oriented Mamba layers per stage (paper: 2, 2, 2, 2).
        hidden_size: width of the bottleneck block (paper: 768).
        norm_name: MONAI norm name of the decoder blocks.
        res_block: residual decoder blocks.
        d_state, d_conv, expand: Mamba hyper-parameters.

    Input (B, in_channels, D, H, W) with D, H, W multiples of 16; output (B, out_channels, D, H, W).
    """

    divisor = 16

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        feature_size: Sequence[int] = (48, 96, 192, 384),
        depths: Sequence[int] = (2, 2, 2, 2),
        hidden_size: int = 768,
        norm_name: str | tuple = "instance",
        res_block: bool = True,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, allowed=(3,))
        widths, depths = list(feature_size), list(depths)
        if len(widths) != 4 or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(
                f"feature_size must be 4 positive ints (one per stage), got {feature_size!r}."
            )
        if len(depths) != 4 or any(not isinstance(d, int) or d < 0 for d in depths):
            raise ValueError(f"depths must be 4 non-negative ints (one per stage), got {depths!r}.")
        for arg, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_size", hidden_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}.")
        blocks = require("monai.networks.blocks", "bio")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.encoder = SegMambaEncoder(in_channels, widths, depths, d_state, d_conv, expand)

        def basic(cin: int, cout: int) -> nn.Module:
            return blocks.UnetrBasicBlock(
                3, cin, cout, 3, 1, norm_name=norm_name, res_block=res_block
            )

        def up(cin: int, cout: int) -> nn.Module:
            return blocks.UnetrUpBlock(3, cin, cout, 3, 2, norm_name=norm_name, res_block=res_block)

        # Skip paths: raw input (full size) and the four encoder outputs (strides 2..16).
        self.skips = nn.ModuleList(
            [basic(in_channels, widths[0])]
            + [basic(widths[i], widths[i + 1]) for i in range(3)]
            + [basic(widths[3], hidden_size)]
        )
        self.ups = nn.ModuleList(
            [up(hidden_size, widths[3])] + [up(widths[i + 1], widths[i]) for i in (2, 1, 0)]
        )
        self.decoder_out = basic(widths[0], widths[0])
        self.head = blocks.UnetOutBlock(3, widths[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, D, H, W) -> logits (B, out_channels, D, H, W)."""
        check_input(x, 3, self.in_channels, self.divisor, type(self).__name__)
        check_not_single_voxel(x, self.divisor, type(self).__name__)
        features = [x, *self.encoder(x)]
        skips = [block(f) for block, f in zip(self.skips, features)]
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(self.decoder_out(y))


@register_model(
    "bio.segmamba",
    tiny=dict(feature_size=(4, 8, 8, 16), depths=(1, 1, 1, 1), hidden_size=16, d_state=4),
    example_inputs=lambda m: (torch.randn(1, m.in_channels, 32, 16, 16),),
    description="SegMamba (MICCAI 2024): tri-oriented Mamba encoder + UNETR decoder, 3-D",
)
def segmamba(**kwargs: object) -> SegMamba:
    """SegMamba with the paper's widths (48, 96, 192, 384; hidden 768; depths 2, 2, 2, 2)."""
    return SegMamba(**kwargs)  # type: ignore[arg-type]
