"""Optimizer parameter groups that honour the ``_no_weight_decay`` hints of SSM parameters."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["param_groups"]


def param_groups(
    model: nn.Module, weight_decay: float, *, decay_1d: bool = False
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed group.

    No weight decay for parameters flagged ``_no_weight_decay`` (``A_log``, ``D``, ``dt_bias``, ...),
    for names listed by ``model.no_weight_decay()`` (the timm convention), and, unless
    ``decay_1d``, for every parameter with fewer than 2 dimensions (biases, norm scales), as in
    mamba_ssm's and timm's training recipes. Shared parameters appear once; frozen ones not at all.

    Args:
        model: the module to optimise.
        weight_decay: decay of the first group (>= 0).
        decay_1d: also decay 1-D parameters that carry no ``_no_weight_decay`` flag.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``
        without empty groups, ready for ``torch.optim.AdamW(param_groups(model, 0.1), lr=...)``.
    """
    if weight_decay < 0:
        raise ValueError(f"param_groups: weight_decay must be >= 0, got {weight_decay}.")
    skip_names: set[str] = set()
    if callable(getattr(model, "no_weight_decay", None)):
        skip_names = set(model.no_weight_decay())
    decay, no_decay, seen = [], [], set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        flagged = getattr(param, "_no_weight_decay", False) or name in skip_names
        if flagged or (param.ndim < 2 and not decay_1d):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
