"""The part of timm's model contract that Vim and VMamba share, written once.

timm models expose the same surface whatever their family (``get_classifier``,
``reset_classifier``, ``forward`` = ``forward_head(forward_features(x))``, ``no_weight_decay``,
``forward_intermediates`` index handling, ``prune_intermediate_layers``); see timm's
``timm/models/*`` conventions. :class:`TimmSurface` implements it over a few class attributes, and
each backbone keeps only what is its own (embedding, blocks, pooling, feature layout):

- ``_blocks_attr``: the ``nn.ModuleList`` whose entries are the feature taps (``"layers"`` for
  Vim's blocks, ``"stages"`` for VMamba's stages);
- ``_norm_attr``: the final norm (``"norm_f"`` / ``"norm"``);
- ``_pool_choices``: the accepted ``global_pool`` values;
- ``_no_weight_decay_extra``: parameter names never decayed besides the mixers' own;
- ``_taps_change_width``: whether taps differ in width (hierarchical stages).

Vim: Zhu et al. 2024, arXiv 2401.09417. VMamba: Liu et al. 2024, arXiv 2401.10166.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssmkit.vision.layers import init_linear_trunc_normal, no_weight_decay_names, take_indices


class TimmSurface:
    """Mixin for ``nn.Module`` backbones: the family-independent timm methods.

    The class using it defines ``num_features``, ``num_classes``, ``global_pool``, ``head``,
    ``feature_info``, ``forward_features`` and ``forward_head``.
    """

    _blocks_attr: str = "layers"
    _norm_attr: str = "norm"
    _pool_choices: tuple[str, ...] = ("avg", "")
    _no_weight_decay_extra: tuple[str, ...] = ()
    _taps_change_width: bool = False

    def _check_global_pool(self, global_pool: str) -> None:
        """Raise unless ``global_pool`` is one of ``_pool_choices``."""
        if global_pool not in self._pool_choices:
            choices = ", ".join(repr(c) for c in self._pool_choices)
            raise ValueError(f"global_pool must be one of {choices}; got {global_pool!r}.")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names of parameters without weight decay (``_no_weight_decay`` ones plus extras)."""
        return no_weight_decay_names(self, self._no_weight_decay_extra)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier module (``nn.Identity`` when ``num_classes == 0``)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head with ``num_classes`` outputs (0: none); optionally change the pooling."""
        if global_pool is not None:
            self._check_global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = (
            nn.Linear(self.num_features, num_classes, device=device)
            if num_classes > 0
            else nn.Identity()
        )
        self.head.apply(init_linear_trunc_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def _intermediate_plan(
        self,
        indices: int | Sequence[int] | None,
        stop_early: bool,
        intermediates_only: bool,
        output_fmt: str,
        formats: tuple[str, ...],
    ) -> tuple[list[int], nn.ModuleList]:
        """Checked ``output_fmt``; the taps to return and the blocks to run for them."""
        if output_fmt not in formats:
            choices = " or ".join(repr(f) for f in formats)
            raise ValueError(f"output_fmt must be {choices}, got {output_fmt!r}.")
        blocks = getattr(self, self._blocks_attr)
        taken, max_index = take_indices(len(blocks), indices)
        if stop_early or intermediates_only:
            blocks = blocks[: max_index + 1]
        return taken, blocks

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the taps after the last requested one (and the norm / head); returns the indices.

        In a hierarchical model (``_taps_change_width``) the final norm and the head belong to the
        last stage's width, so dropping stages drops them too and ``num_features`` becomes the
        last kept stage's width.
        """
        blocks = getattr(self, self._blocks_attr)
        taken, max_index = take_indices(len(blocks), indices)
        narrowed = self._taps_change_width and max_index < len(blocks) - 1
        setattr(self, self._blocks_attr, blocks[: max_index + 1])
        self.feature_info = self.feature_info[: max_index + 1]
        if narrowed:
            self.num_features = self.head_hidden_size = self.feature_info[-1]["num_chs"]
        if prune_norm or narrowed:
            setattr(self, self._norm_attr, nn.Identity())
        if prune_head or narrowed:
            self.reset_classifier(0, "")
        return taken
