"""VMamba: a hierarchical backbone of 2-D selective-scan (SS2D) blocks.

Liu et al., "VMamba: Visual State Space Model" (NeurIPS 2024), https://arxiv.org/abs/2401.10166.
Architecture of the released v2 models (``forward_type="v05_noz"``):

    stem      Conv3x3/s2 (C/2) -> LN -> GELU -> Conv3x3/s2 (C) -> LN            stride 4
    stage i   [downsample Conv3x3/s2 (C_i) -> LN  for i > 0]                      strides 4/8/16/32
              depth_i x VSSBlock:  x + DropPath(SS2D(LN(x)));  x + DropPath(Mlp(LN(x)))
    head      LN -> global average pool -> Linear

SS2D is ``ssmkit.core.SS2D`` (in_proj -> depthwise conv -> SiLU -> cross-scan over 4 orders ->
grouped selective scan -> cross-merge -> LayerNorm -> out_proj), so it runs on CPU too. Internally
the stages work channels-last ``(B, H, W, C)``; features and ``forward_features`` are NCHW.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ssmkit.core import SS2D
from ssmkit.core.registry import register_model
from ssmkit.vision.backbone import TimmSurface
from ssmkit.vision.layers import DropPath, Mlp, init_linear_trunc_normal, linspace

# Published v2 configurations (MzeroMiko/VMamba README): T [s1l8], S [s1l20], B [s1l20].
VMAMBA_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0, d_state=1, mlp_ratio=4.0),
    "small": dict(dims=96, depths=(2, 2, 20, 2), ssm_ratio=1.0, d_state=1, mlp_ratio=4.0),
    "base": dict(dims=128, depths=(2, 2, 20, 2), ssm_ratio=1.0, d_state=1, mlp_ratio=4.0),
}


class Stem(nn.Module):
    """VMamba v2 patch embedding: two 3x3 stride-2 convolutions with LayerNorm and GELU."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, 2, 1)
        self.norm1 = nn.LayerNorm(dim // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, 2, 1)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C_in, H, W)``. Returns ``(B, H/4, W/4, dim)`` channels-last."""
        x = self.act(self.norm1(self.conv1(x).permute(0, 2, 3, 1)))
        return self.norm2(self.conv2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """3x3 stride-2 convolution to the next stage's width, then LayerNorm (VMamba "v3")."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, H, W, dim)``. Returns ``(B, ceil(H/2), ceil(W/2), out_dim)``."""
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class VSSBlock(nn.Module):
    """Visual state-space block: SS2D token mixer and MLP, each pre-norm with a residual.

    Liu et al. 2024, arXiv 2401.10166, Fig. 3 (v2 block with MLP).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        d_conv: int = 3,
        with_z: bool = False,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        conv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.op = SS2D(
            dim,
            d_state=d_state,
            ssm_ratio=ssm_ratio,
            d_conv=d_conv,
            with_z=with_z,
            conv_bias=conv_bias,
        )
        self.drop_path = DropPath(drop_path)
        self.mlp_ratio = mlp_ratio
        if mlp_ratio > 0:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, H, W, C)``. Returns ``(B, H, W, C)``."""
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp_ratio > 0:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class VSSStage(nn.Module):
    """Optional downsample, then a sequence of :class:`VSSBlock` (one resolution)."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, H, W, C_in)``. Returns ``(B, H', W', C)``."""
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class VMamba(TimmSurface, nn.Module):
    """VMamba image classifier / hierarchical backbone (Liu et al. 2024, arXiv 2401.10166).

    Args:
        in_chans: input channels.
        num_classes: classifier outputs (0: no head).
        dims: stage-0 width ``C`` (stages ``C, 2C, 4C, 8C``) or the four widths.
        depths: blocks per stage.
        d_state: SSM state size (1 in the v2 models, 16 in the v0 models).
        ssm_ratio: SS2D inner width ``E = ssm_ratio * C_i``.
        d_conv: depthwise conv size inside SS2D (3).
        with_z: SS2D output gate (v0: True, v2 ``v05_noz``: False).
        conv_bias: bias of SS2D's depthwise conv (False in the v2 configs).
        mlp_ratio: MLP hidden ratio (0: no MLP, as in v0).
        global_pool: ``"avg"`` or ``""``.
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        img_size: nominal input size (for ``pretrained_cfg``; any size divisible by 32 works).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        dims: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 8, 2),
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        d_conv: int = 3,
        with_z: bool = False,
        conv_bias: bool = False,
        mlp_ratio: float = 4.0,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        img_size: int | tuple[int, int] = 224,
    ) -> None:
        super().__init__()
        self._check_global_pool(global_pool)
        depths = list(depths)
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        dims = list(dims)
        if len(dims) != len(depths) or not depths:
            raise ValueError(
                f"dims ({dims}) and depths ({depths}) must have one entry per stage; "
                "pass dims as an int to get C, 2C, 4C, 8C."
            )
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.dims = dims
        self.img_size = img_size
        self.num_features = self.head_hidden_size = dims[-1]
        self.stem = Stem(in_chans, dims[0])
        rates = linspace(0.0, drop_path_rate, sum(depths))
        stages = []
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            blocks = [
                VSSBlock(
                    dims[i],
                    d_state,
                    ssm_ratio,
                    d_conv,
                    with_z,
                    mlp_ratio,
                    rates[start + j],
                    conv_bias,
                )
                for j in range(depth)
            ]
            down = Downsample(dims[i - 1], dims[i]) if i > 0 else nn.Identity()
            stages.append(VSSStage(down, blocks))
        self.stages = nn.ModuleList(stages)
        self.feature_info = [
            dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}")
            for i in range(len(depths))
        ]
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        # ViT-style init for our own linears; the SS2D mixers keep their Mamba initialisation.
        self.head.apply(init_linear_trunc_normal)
        for module in self.modules():
            if isinstance(module, Mlp):
                module.apply(init_linear_trunc_normal)

    # ----------------------------------------------------------------- timm surface: info
    # (no_weight_decay: the SS2D ``_no_weight_decay`` parameters, A_logs and Ds)
    _blocks_attr = "stages"
    _norm_attr = "norm"
    _pool_choices = ("avg", "")
    _taps_change_width = True

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay: stem, then stages or single blocks."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @property
    def grad_checkpointing(self) -> bool:
        return bool(self.stages) and all(s.grad_checkpointing for s in self.stages)

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> normalised last-stage map ``(B, C_last, H/32, W/32)``."""
        if x.dim() != 4:
            raise ValueError(f"Expected images (B, C, H, W), got shape {tuple(x.shape)}.")
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, h, w)`` -> logits ``(B, num_classes)`` (pooled ``(B, C)`` if pre_logits)."""
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (before the next downsample), NCHW or NHWC, strides 4/8/16/32.

        Args:
            x: images ``(B, C, H, W)``.
            indices: stages to take (``None`` all, int = last n, list).
            norm: apply the final norm to the last stage's feature (timm convention).
            stop_early: stop after the last requested stage (only with ``intermediates_only``).
            output_fmt: ``"NCHW"`` or ``"NHWC"``.
            intermediates_only: return only the features.
        """
        taken, stages = self._intermediate_plan(
            indices, stop_early, intermediates_only, output_fmt, ("NCHW", "NHWC")
        )
        last = len(self.stages) - 1
        features = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in taken:
                feat = self.norm(x) if norm and i == last else x
                features.append(feat.permute(0, 3, 1, 2) if output_fmt == "NCHW" else feat)
        if intermediates_only:
            return features
        return self.norm(x).permute(0, 3, 1, 2), features


# --------------------------------------------------------------------- ssmkit registry
_TINY = dict(dims=8, depths=(1, 1), d_state=2, num_classes=5)


def _images(model: nn.Module) -> tuple[torch.Tensor]:
    return (torch.randn(2, 3, 32, 32),)


def _vmamba(size: str, **kwargs: Any) -> VMamba:
    return VMamba(**{**VMAMBA_CONFIGS[size], **kwargs})


@register_model("vision.vmamba_tiny", tiny=_TINY, example_inputs=_images)
def vmamba_tiny(**kwargs: Any) -> VMamba:
    """VMamba-T [s1l8] (C 96, depths 2-2-8-2, 30M): ImageNet 82.6 top-1."""
    return _vmamba("tiny", **kwargs)


@register_model("vision.vmamba_small", tiny=_TINY, example_inputs=_images)
def vmamba_small(**kwargs: Any) -> VMamba:
    """VMamba-S [s1l20] (C 96, depths 2-2-20-2, 49M): ImageNet 83.3 top-1."""
    return _vmamba("small", **kwargs)


@register_model("vision.vmamba_base", tiny=_TINY, example_inputs=_images)
def vmamba_base(**kwargs: Any) -> VMamba:
    """VMamba-B [s1l20] (C 128, depths 2-2-20-2, 87M): ImageNet 83.8 top-1."""
    return _vmamba("base", **kwargs)
