"""Building blocks shared by the vision backbones (pure PyTorch, no timm needed).

- :class:`PatchEmbed`: non-overlapping (or strided, Vim "+") patch projection with an explicit
  input-size check or dynamic image size.
- :func:`resample_pos_embed`: bicubic resampling of an absolute position embedding whose class
  token may sit in the *middle* of the sequence (Vim, Zhu et al. 2024, arXiv 2401.09417).
- :class:`DropPath` (stochastic depth, Huang et al. 2016), :class:`Mlp` (ViT/Swin MLP).
- :func:`take_indices`: timm's ``feature_take_indices`` semantics without importing timm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def to_2tuple(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``7 -> (7, 7)``; ``(7, 9)`` unchanged; anything else raises naming ``name``."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}.")


def take_indices(num_features: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """Absolute feature indices to take, and the largest one (timm ``feature_take_indices``).

    Args:
        num_features: how many taps the model has (layers or stages).
        indices: ``None`` = all; an int ``n`` = the last ``n``; a sequence = those (negative counts
            from the end).
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(
                f"indices={indices} asks for the last {indices} features, but the model has "
                f"{num_features}; pass 1..{num_features} or a list of indices."
            )
        taken = list(range(num_features - indices, num_features))
    else:
        taken = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(
                    f"feature index {i} is out of range for a model with {num_features} taps "
                    f"(valid: {-num_features}..{num_features - 1})."
                )
            taken.append(idx)
    return taken, max(taken)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    *,
    cls_position: str | None = "middle",
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample an absolute position embedding to a new patch grid.

    Vim inserts its class token at index ``M // 2`` of the ``M`` patch tokens, so the embedding
    of the class token sits at that index too. timm's ``resample_abs_pos_embed`` assumes the class
    token at index 0; here the class entry is removed from wherever it sits, the patch grid is
    resampled, and the class entry is re-inserted at the new middle ``M' // 2``.

    Args:
        pos_embed: ``(1, M + c, D)`` with ``c = 1`` if ``cls_position`` else ``0``.
        new_grid: ``(H', W')`` patch grid.
        old_grid: ``(H, W)``; ``None`` assumes a square grid.
        cls_position: ``"middle"`` (Vim), ``"first"`` (ViT) or ``None`` (no class token).
        interpolation: ``F.interpolate`` mode.
        antialias: antialias when downsampling (bicubic/bilinear only).

    Returns:
        ``(1, H' * W' + c, D)`` in ``pos_embed``'s dtype.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be (1, M + c, D), got shape {tuple(pos_embed.shape)}.")
    if cls_position not in ("middle", "first", None):
        raise ValueError(f"cls_position must be 'middle', 'first' or None, got {cls_position!r}.")
    n_prefix = 0 if cls_position is None else 1
    num_patches = pos_embed.shape[1] - n_prefix
    if old_grid is None:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(
                f"pos_embed has {num_patches} patch positions, not a square grid; pass old_grid."
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != num_patches:
        raise ValueError(
            f"old_grid {old_grid} has {old_grid[0] * old_grid[1]} cells but pos_embed has "
            f"{num_patches} patch positions."
        )
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    if cls_position == "middle":
        mid = num_patches // 2
        cls = pos_embed[:, mid : mid + 1]
        patches = torch.cat([pos_embed[:, :mid], pos_embed[:, mid + 1 :]], dim=1)
    elif cls_position == "first":
        cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    else:
        cls, patches = None, pos_embed
    dim = patches.shape[-1]
    grid = patches.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    use_aa = antialias and interpolation in ("bilinear", "bicubic")
    grid = F.interpolate(grid, size=tuple(new_grid), mode=interpolation, antialias=use_aa)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    if cls is None:
        return patches
    if cls_position == "first":
        return torch.cat([cls, patches], dim=1)
    new_mid = patches.shape[1] // 2
    return torch.cat([patches[:, :new_mid], cls, patches[:, new_mid:]], dim=1)


class PatchEmbed(nn.Module):
    """Image to patch tokens with one ``Conv2d(in_chans, D, patch, stride)``.

    ViT (Dosovitskiy et al. 2021, arXiv 2010.11929) uses ``stride == patch``; Vim's "+" models
    use stride 8 with 16x16 patches (overlapping, 224^2 -> 27 x 27 tokens).

    Args:
        img_size: nominal input size (sets the default grid and the position embedding size).
        patch_size: kernel size.
        stride: conv stride (``None`` = ``patch_size``).
        in_chans: input channels.
        embed_dim: token width ``D``.
        strict_img_size: raise unless the input is exactly ``img_size``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        stride: int | tuple[int, int] | None = None,
        in_chans: int = 3,
        embed_dim: int = 192,
        strict_img_size: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size, "img_size")
        self.patch_size = to_2tuple(patch_size, "patch_size")
        self.stride = to_2tuple(stride if stride is not None else patch_size, "stride")
        self.strict_img_size = strict_img_size
        self.grid_size = self.dynamic_grid(self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, self.patch_size, self.stride)

    def dynamic_grid(self, img_size: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(H', W')`` produced for an ``(H, W)`` input."""
        h, w = img_size
        if h < self.patch_size[0] or w < self.patch_size[1]:
            raise ValueError(
                f"Input {h}x{w} is smaller than one {self.patch_size[0]}x{self.patch_size[1]} "
                "patch; use a larger image."
            )
        return (
            (h - self.patch_size[0]) // self.stride[0] + 1,
            (w - self.patch_size[1]) // self.stride[1] + 1,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(B, C, H, W)``. Returns ``(B, H', W', D)``."""
        if x.dim() != 4:
            raise ValueError(f"Expected images (B, C, H, W), got shape {tuple(x.shape)}.")
        if x.shape[1] != self.proj.in_channels:
            raise ValueError(
                f"Expected {self.proj.in_channels} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)}); create the model with in_chans={x.shape[1]}."
            )
        if self.strict_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"Input size {tuple(x.shape[-2:])} does not match img_size {self.img_size}. "
                "Create the model with img_size=<your size> (position embeddings are resampled "
                "when loading weights) or with dynamic_img_size=True."
            )
        return self.proj(x).permute(0, 2, 3, 1)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016, arXiv 1603.09382)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}.")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Two-layer MLP ``fc2(drop(act(fc1(x))))`` over the last dimension (ViT, Swin, VMamba)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(..., dim)``. Returns ``(..., dim)``."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def linspace(start: float, end: float, steps: int) -> list[float]:
    """Python ``linspace`` (drop-path schedules; works while building on the meta device)."""
    if steps <= 1:
        return [float(start)] * max(steps, 0)
    return [start + (end - start) * i / (steps - 1) for i in range(steps)]


def init_linear_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """Initialise ``nn.Linear`` weights ``trunc_normal(std)`` and biases 0 (ViT/DeiT convention)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def no_weight_decay_names(model: nn.Module, extra: Sequence[str] = ()) -> set[str]:
    """Parameter names that must not be decayed: the ``_no_weight_decay`` ones plus ``extra``."""
    names = {n for n, p in model.named_parameters() if getattr(p, "_no_weight_decay", False)}
    return names | set(extra)
