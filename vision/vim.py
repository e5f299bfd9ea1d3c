"""Vision Mamba (Vim): a bidirectional Mamba stack over patch tokens with a middle class token.

Zhu et al., "Vision Mamba: Efficient Visual Representation Learning with Bidirectional State Space
Model" (ICML 2024), https://arxiv.org/abs/2401.09417. Architecture (authors' released models):

    tokens = PatchEmbed(x)                              (B, M, D), M = H' * W'
    tokens = [t_0 .. t_{M//2-1}, cls, t_{M//2} .. ]     class token in the middle
    h      = tokens + pos_embed                         (1, M + 1, D)
    24 x   residual <- residual + drop_path(h); h <- BiMamba_v2(RMSNorm(residual))   (fp32 residual)
    out    = RMSNorm_f(residual + drop_path(h))[:, M // 2]  -> Linear head

The mixer is ``ssmkit.core.BiMamba(variant="v2", merge="mean")`` (Vim's "bimamba v2, div2"), so the
backward scan runs on every backend, CPU included.

The model implements timm's model contract without importing timm; ``ssmkit.vision.timm_models``
registers it with timm (``timm.create_model("vim_tiny_patch16_224")``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ssmkit.core import BiMamba, ResidualBlock, RMSNorm
from ssmkit.core.registry import register_model
from ssmkit.vision.backbone import TimmSurface
from ssmkit.vision.layers import (
    DropPath,
    PatchEmbed,
    init_linear_trunc_normal,
    linspace,
    resample_pos_embed,
    to_2tuple,
)

VIM_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=192, depth=24),
    "small": dict(embed_dim=384, depth=24),
    "base": dict(embed_dim=768, depth=24),
}


class VisionMamba(TimmSurface, nn.Module):
    """Vim image classifier / backbone (Zhu et al. 2024, arXiv 2401.09417).

    Args:
        img_size: nominal input size (position embedding grid).
        patch_size: patch (conv kernel) size, 16 in all released models.
        stride: patch stride: 16, or 8 for the "+" models (27 x 27 tokens at 224^2).
        in_chans: input channels.
        num_classes: classifier outputs (0: no head, ``forward`` returns pooled features).
        embed_dim: token width ``D`` (192 / 384 / 768 for Ti / S / B).
        depth: number of bidirectional Mamba blocks (24).
        d_state, d_conv, expand: Mamba mixer sizes (16, 4, 2).
        global_pool: ``"token"`` (the middle class token, as released), ``"avg"`` (mean of the
            patch tokens) or ``""`` (no pooling).
        class_token: insert a middle class token (needed for ``global_pool="token"``).
        drop_rate: dropout before the head.
        pos_drop_rate: dropout after adding position embeddings.
        drop_path_rate: stochastic depth, linearly spaced and shifted by one block as in Vim.
        dynamic_img_size: accept any input size (position embeddings resampled on the fly).
        residual_in_fp32: keep the residual stream in fp32 (Vim trains with it).
        norm_eps: RMSNorm epsilon.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        stride: int | None = None,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        global_pool: str = "token",
        class_token: bool = True,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        dynamic_img_size: bool = False,
        residual_in_fp32: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_prefix_tokens = 1 if class_token else 0
        self._check_global_pool(global_pool)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(
            img_size, patch_size, stride, in_chans, embed_dim, strict_img_size=not dynamic_img_size
        )
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim)
        )
        self.pos_drop = nn.Dropout(pos_drop_rate)

        # Vim: block i applies drop path to its *incoming* hidden state: rates [0] + linspace[:-1].
        rates = [0.0] + linspace(0.0, drop_path_rate, depth)
        self.layers = nn.ModuleList(
            ResidualBlock(
                embed_dim,
                BiMamba(
                    embed_dim,
                    variant="v2",
                    merge="mean",
                    d_state=d_state,
                    d_conv=d_conv,
                    expand=expand,
                    layer_idx=i,
                ),
                norm="rms",
                drop_path=rates[i],
                residual_in_fp32=residual_in_fp32,
            )
            for i in range(depth)
        )
        self.drop_path = DropPath(drop_path_rate)
        self.norm_f = RMSNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        stride_px = self.patch_embed.stride[0]
        self.feature_info = [
            dict(module=f"layers.{i}", num_chs=embed_dim, reduction=stride_px) for i in range(depth)
        ]
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.head.apply(init_linear_trunc_normal)
        # GPT-2 / mamba_ssm rescaling of the residual-branch output projection.
        for name, p in self.layers.named_parameters():
            if name.endswith("out_proj.weight"):
                with torch.no_grad():
                    nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                    p /= math.sqrt(depth)

    # ----------------------------------------------------------------- timm surface: info
    _blocks_attr = "layers"
    _norm_attr = "norm_f"
    _pool_choices = ("token", "avg", "")
    _no_weight_decay_extra = ("pos_embed", "cls_token")

    def _check_global_pool(self, global_pool: str) -> None:
        super()._check_global_pool(global_pool)
        if global_pool == "token" and not self.num_prefix_tokens:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg'.")

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay (stem, one group per block, final norm)."""
        return dict(
            stem=r"^cls_token|^pos_embed|^patch_embed",
            blocks=[(r"^layers\.(\d+)", None), (r"^norm_f", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def set_input_size(self, img_size: int | tuple[int, int]) -> None:
        """Change the nominal input size; the position embedding is resampled (middle cls aware)."""
        old_grid = self.patch_embed.grid_size
        self.patch_embed.img_size = to_2tuple(img_size, "img_size")
        self.patch_embed.grid_size = self.patch_embed.dynamic_grid(self.patch_embed.img_size)
        self.patch_embed.num_patches = self.patch_embed.grid_size[0] * self.patch_embed.grid_size[1]
        with torch.no_grad():
            new = resample_pos_embed(
                self.pos_embed.data,
                self.patch_embed.grid_size,
                old_grid,
                cls_position=self._cls_pos,
            )
        self.pos_embed = nn.Parameter(new)

    @property
    def _cls_pos(self) -> str | None:
        return "middle" if self.cls_token is not None else None

    # ----------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images ``(B, C, H, W)`` -> tokens ``(B, M + 1, D)`` with the class token at ``M // 2``."""
        tokens = self.patch_embed(x)
        grid = (tokens.shape[1], tokens.shape[2])
        tokens = tokens.flatten(1, 2)
        pos = self.pos_embed
        if self.dynamic_img_size and grid != self.patch_embed.grid_size:
            pos = resample_pos_embed(
                pos, grid, self.patch_embed.grid_size, cls_position=self._cls_pos
            )
        if self.cls_token is not None:
            mid = tokens.shape[1] // 2
            cls = self.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens[:, :mid], cls, tokens[:, mid:]], dim=1)
        return self.pos_drop(tokens + pos), grid

    def _run_layer(
        self, layer: nn.Module, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, hidden, residual, use_reentrant=False)
        return layer(hidden, residual)

    def _finish(self, hidden: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The last fused add + norm: ``norm_f(residual + drop_path(hidden))``."""
        stream = self.drop_path(hidden) if residual is None else residual + self.drop_path(hidden)
        return self.norm_f(stream)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> normalised tokens ``(B, M + 1, D)`` (cls at ``M // 2``)."""
        hidden, _ = self._embed(x)
        residual = None
        for layer in self.layers:
            hidden, residual = self._run_layer(layer, hidden, residual)
        return self._finish(hidden, residual)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, M + 1, D)`` -> ``(B, D)`` (or unchanged when ``global_pool=''``)."""
        if self.global_pool == "token":
            return x[:, (x.shape[1] - 1) // 2]
        if self.global_pool == "avg":
            if self.cls_token is None:
                return x.mean(dim=1)
            mid = (x.shape[1] - 1) // 2
            return torch.cat([x[:, :mid], x[:, mid + 1 :]], dim=1).mean(dim=1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``(B, M + 1, D)`` -> logits ``(B, num_classes)`` (or pooled ``(B, D)``)."""
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.head(x)

    # ----------------------------------------------------------------- intermediates
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Features after selected blocks (timm's ``forward_intermediates``).

        The feature after block ``i`` is the residual stream ``residual + hidden``; with
        ``norm=True`` it goes through the final norm.

        Args:
            x: images ``(B, C, H, W)``.
            indices: blocks to take (``None`` all, int = last n, list of indices).
            return_prefix_tokens: also return the class token per feature (NCHW, cls) pairs.
            norm: apply ``norm_f`` to every feature.
            stop_early: stop after the last requested block (only with ``intermediates_only``).
            output_fmt: ``"NCHW"`` (B, D, H', W') or ``"NLC"`` (B, M (+1), D) tokens.
            intermediates_only: return only the list of features.

        Returns:
            The features, or ``(forward_features(x), features)``.
        """
        taken, layers = self._intermediate_plan(
            indices, stop_early, intermediates_only, output_fmt, ("NCHW", "NLC")
        )
        hidden, grid = self._embed(x)
        residual = None
        features: list[torch.Tensor] = []
        for i, layer in enumerate(layers):
            hidden, residual = self._run_layer(layer, hidden, residual)
            if i in taken:
                stream = hidden if residual is None else residual + hidden
                feat = self.norm_f(stream) if norm else stream.to(hidden.dtype)
                features.append(feat)
        if self.cls_token is not None:
            mid = (features[0].shape[1] - 1) // 2 if features else 0
            prefix = [f[:, mid] for f in features]
            features = [torch.cat([f[:, :mid], f[:, mid + 1 :]], dim=1) for f in features]
        else:
            prefix = [None] * len(features)
        if output_fmt == "NCHW":
            b, d = x.shape[0], self.embed_dim
            features = [f.reshape(b, grid[0], grid[1], d).permute(0, 3, 1, 2) for f in features]
        out: list[Any] = (
            list(zip(features, prefix))
            if return_prefix_tokens and self.cls_token is not None
            else features
        )
        if intermediates_only:
            return out
        return self._finish(hidden, residual), out


# --------------------------------------------------------------------- ssmkit registry
def _vim(size: str, stride: int | None = None, **kwargs: Any) -> VisionMamba:
    return VisionMamba(**{**VIM_CONFIGS[size], "patch_size": 16, "stride": stride, **kwargs})


_TINY = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, d_state=4, num_classes=5)
_TINY_S8 = dict(
    img_size=32, patch_size=8, stride=4, embed_dim=16, depth=2, d_state=4, num_classes=5
)


def _images(model: nn.Module) -> tuple[torch.Tensor]:
    return (torch.randn(2, 3, *model.patch_embed.img_size),)


@register_model("vision.vim_tiny", tiny=_TINY, example_inputs=_images)
def vim_tiny(**kwargs: Any) -> VisionMamba:
    """Vim-Ti (D 192, 24 blocks, 7M): ImageNet 76.1 top-1."""
    return _vim("tiny", **kwargs)


@register_model("vision.vim_small", tiny=_TINY, example_inputs=_images)
def vim_small(**kwargs: Any) -> VisionMamba:
    """Vim-S (D 384, 24 blocks, 26M): ImageNet 80.5 top-1."""
    return _vim("small", **kwargs)


@register_model("vision.vim_base", tiny=_TINY, example_inputs=_images)
def vim_base(**kwargs: Any) -> VisionMamba:
    """Vim-B (D 768, 24 blocks, 98M): ImageNet 81.9 top-1."""
    return _vim("base", **kwargs)


@register_model("vision.vim_tiny_stride8", tiny=_TINY_S8, example_inputs=_images)
def vim_tiny_stride8(**kwargs: Any) -> VisionMamba:
    """Vim-Ti+ (stride 8, 27x27 tokens at 224^2): ImageNet 78.3 top-1."""
    return _vim("tiny", **{"stride": 8, **kwargs})


@register_model("vision.vim_small_stride8", tiny=_TINY_S8, example_inputs=_images)
def vim_small_stride8(**kwargs: Any) -> VisionMamba:
    """Vim-S+ (stride 8, 27x27 tokens at 224^2): ImageNet 81.6 top-1."""
    return _vim("small", **{"stride": 8, **kwargs})
