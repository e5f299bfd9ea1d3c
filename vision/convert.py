"""Convert the authors' published state dicts to ssmkit's Vim and VMamba modules.

- Vim (Zhu et al. 2024, arXiv 2401.09417; ``hustvl/Vim-{tiny,small,base}-midclstok`` on the HF
  Hub, ``*.pth`` with the weights under ``"model"``): block parameter names already match ours
  (``layers.{i}.norm``, ``layers.{i}.mixer.{in_proj,conv1d,conv1d_b,x_proj,x_proj_b,dt_proj,
  dt_proj_b,A_log,A_b_log,D,D_b,out_proj}``, ``norm_f``, ``head``); the position embedding is
  resampled around its *middle* class token when the patch grid differs (other resolution,
  stride-8 fine-tuning).
- VMamba v2 (Liu et al. 2024, arXiv 2401.10166; GitHub release ``vssm1_*.pth``, weights under
  ``"model"``): ``patch_embed.{0,2,5,7}`` -> ``stem.{conv1,norm1,conv2,norm2}``,
  ``layers.{i}.blocks`` -> ``stages.{i}.blocks``, ``layers.{i}.downsample.{1,3}`` ->
  ``stages.{i+1}.downsample.{conv,norm}`` (our downsample opens the next stage, so stage outputs are
  the pre-downsample features), ``classifier.{norm,head}`` -> ``{norm,head}``; ``Linear2d``
  weights ``(out, in, 1, 1)`` become ``(out, in)``; a missing SS2D conv bias (``ssm_conv_bias=False``)
  is filled with zeros.

Both filters are idempotent on ssmkit's own state dicts, so ``checkpoint_filter_fn`` can be used for
any checkpoint (timm's ``pretrained_filter_fn``).

The Vim files are whole DeiT-style training checkpoints (115 MB for the 7M-parameter Vim-Ti, with
the training ``args`` pickled as an ``argparse.Namespace``): besides ``"model"`` they hold the
optimizer state and, by their size, an EMA copy. :func:`unwrap_state_dict` takes ``"model"`` (the
weights whose accuracy the authors report for Ti / S); note that timm's own file loader
(``pretrained_cfg_overlay=dict(file=...)``) prefers ``"model_ema"`` when a checkpoint has one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ssmkit.vision.layers import resample_pos_embed


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint (``"model"``, ``"state_dict"``, ``"model_ema"`` keys),
    with ``module.`` (DDP) and ``model.`` (Lightning task) prefixes removed."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a mapping (a state dict), got {type(checkpoint)}.")
    for key in ("model", "state_dict", "model_ema"):
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            checkpoint = inner
            break
    out = {}
    for k, v in checkpoint.items():
        if not isinstance(v, torch.Tensor):
            continue
        for prefix in ("module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def vim_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Authors' Vim state dict (or ours) -> ``model``'s keys and shapes.

    Args:
        state_dict: the checkpoint (``{"model": {...}}`` or a flat state dict).
        model: the target :class:`~ssmkit.vision.vim.VisionMamba`.
    """
    sd = unwrap_state_dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("head_dist") or k == "dist_token":  # DeiT-style leftovers, unused by Vim
            continue
        if k == "pos_embed" and v.shape != model.pos_embed.shape:
            has_cls = model.cls_token is not None
            n_old = v.shape[1] - (1 if has_cls else 0)
            v = resample_pos_embed(
                v,
                model.patch_embed.grid_size,
                _grid_for(n_old, model.patch_embed.grid_size),
                cls_position="middle" if has_cls else None,
            )
        elif k == "patch_embed.proj.weight" and v.shape != model.patch_embed.proj.weight.shape:
            raise ValueError(
                f"patch_embed.proj.weight has shape {tuple(v.shape)} in the checkpoint but "
                f"{tuple(model.patch_embed.proj.weight.shape)} in the model: build the model with "
                "the checkpoint's patch size and embed_dim."
            )
        out[k] = v
    return out


def _grid_for(num_patches: int, like: tuple[int, int]) -> tuple[int, int]:
    """The checkpoint's patch grid: square, or with the target's aspect ratio."""
    side = round(num_patches**0.5)
    if side * side == num_patches:
        return side, side
    ratio = like[1] / like[0]
    h = round((num_patches / ratio) ** 0.5)
    if h > 0 and num_patches % h == 0:
        return h, num_patches // h
    raise ValueError(
        f"Cannot infer the patch grid of a position embedding with {num_patches} cells."
    )


_VMAMBA_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^patch_embed\.0\.(.*)"), lambda m: f"stem.conv1.{m[1]}"),
    (re.compile(r"^patch_embed\.2\.(.*)"), lambda m: f"stem.norm1.{m[1]}"),
    (re.compile(r"^patch_embed\.5\.(.*)"), lambda m: f"stem.conv2.{m[1]}"),
    (re.compile(r"^patch_embed\.7\.(.*)"), lambda m: f"stem.norm2.{m[1]}"),
    (re.compile(r"^layers\.(\d+)\.blocks\.(.*)"), lambda m: f"stages.{m[1]}.blocks.{m[2]}"),
    (
        re.compile(r"^layers\.(\d+)\.downsample\.1\.(.*)"),
        lambda m: f"stages.{int(m[1]) + 1}.downsample.conv.{m[2]}",
    ),
    (
        re.compile(r"^layers\.(\d+)\.downsample\.3\.(.*)"),
        lambda m: f"stages.{int(m[1]) + 1}.downsample.norm.{m[2]}",
    ),
    (re.compile(r"^classifier\.norm\.(.*)"), lambda m: f"norm.{m[1]}"),
    (re.compile(r"^classifier\.head\.(.*)"), lambda m: f"head.{m[1]}"),
]


def vmamba_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Authors' VMamba v2 state dict (or ours) -> ``model``'s keys and shapes.

    Args:
        state_dict: the checkpoint (``{"model": {...}}`` or a flat state dict).
        model: the target :class:`~ssmkit.vision.vmamba.VMamba`.
    """
    sd = unwrap_state_dict(state_dict)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for pattern, rename in _VMAMBA_RULES:
            match = pattern.match(k)
            if match:
                k = rename(match)
                break
        if k.startswith(("outnorm", "layers.")):  # Backbone_VSSM extras, or an unknown layout
            if k.startswith("outnorm"):
                continue
            raise ValueError(f"Unrecognised VMamba checkpoint key {k!r}.")
        if k in target and v.dim() == 4 and target[k].dim() == 2 and v.shape[2:] == (1, 1):
            v = v.flatten(1)  # Linear2d (1x1 conv) weights
        out[k] = v
    # ssm_conv_bias=False in the v2 configs: the model's conv bias (if any) becomes zeros.
    for k, t in target.items():
        if k not in out and k.endswith("conv2d.bias"):
            out[k] = torch.zeros_like(t)
    return out


def checkpoint_filter_fn(
    state_dict: Mapping[str, Any], model: nn.Module
) -> dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: dispatch to the Vim or VMamba converter by model type."""
    from ssmkit.vision.vim import VisionMamba
    from ssmkit.vision.vmamba import VMamba

    if isinstance(model, VisionMamba):
        return vim_filter_fn(state_dict, model)
    if isinstance(model, VMamba):
        return vmamba_filter_fn(state_dict, model)
    raise TypeError(
        f"checkpoint_filter_fn converts Vim and VMamba checkpoints; got a {type(model).__name__}."
    )
