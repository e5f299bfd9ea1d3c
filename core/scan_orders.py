"""Scan orders for 2-D and 3-D state-space mixers, shared by vision and bio.

A multi-directional mixer reads an image / volume as K 1-D sequences, each a permutation of the
pixels (VMamba's cross-scan, REFERENCES.md §1.9; SegMamba's tri-oriented scan, §1.8), runs a scan
on each, and sums the K results mapped back (cross-merge, the exact adjoint). The permutations and
their adjoints live in the kernels (:func:`ssmkit.core.ops.cross_scan` and friends); this module
names the order sets the models use and wraps the kernels for channels-last layouts.

Order names (axes slowest to fastest; ``"_flip"`` reverses a sequence):
2-D ``"h"`` row-major, ``"v"`` column-major, ``"h_snake"``, ``"v_snake"`` (boustrophedon),
``"diag"``, ``"anti_diag"``; 3-D any permutation of ``"dhw"`` (``"hwd"`` is depth-fastest, the
inter-slice order).
"""

from __future__ import annotations

import torch

from ssmkit.core import ops
from ssmkit.kernels.cross_scan import ORDERS_2D, ORDERS_3D

__all__ = [
    "BIDIRECTIONAL_ORDERS",
    "CROSS_ORDERS",
    "ORDERS_2D",
    "ORDERS_3D",
    "TRI_ORIENTED_ORDERS",
    "check_orders",
    "default_orders",
    "merge_2d",
    "merge_3d",
    "merge_channels_last",
    "scan_2d",
    "scan_3d",
    "scan_channels_last",
]

#: VMamba's four directions: rows, columns, and both reversed.
CROSS_ORDERS: tuple[str, ...] = ("h", "v", "h_flip", "v_flip")
#: Row-major forward and backward (VMamba's "bidirectional" scan mode).
BIDIRECTIONAL_ORDERS: tuple[str, ...] = ("h", "h_flip")
#: SegMamba's tri-oriented scan: forward, reversed and inter-slice (depth-fastest).
TRI_ORIENTED_ORDERS: tuple[str, ...] = ("dhw", "dhw_flip", "hwd")


def default_orders(k: int) -> tuple[str, ...]:
    """VMamba's order set with ``k`` directions: 1 row-major, 2 bidirectional, 4 cross."""
    table = {1: ("h",), 2: BIDIRECTIONAL_ORDERS, 4: CROSS_ORDERS}
    if k not in table:
        raise ValueError(f"default_orders: k must be 1, 2 or 4, got {k!r}; or name the orders.")
    return table[k]


def check_orders(orders: tuple[str, ...] | list[str], three_d: bool = False) -> tuple[str, ...]:
    """Validate order names early (at construction) with the list of valid names."""
    valid = ORDERS_3D if three_d else ORDERS_2D
    if isinstance(orders, str) or not len(orders):
        raise ValueError(
            f"orders must be a non-empty sequence of order names such as {valid[:4]}, got "
            f"{orders!r}."
        )
    bad = [o for o in orders if o not in valid]
    if bad:
        raise ValueError(f"unknown scan order(s) {bad}; expected names from {valid}.")
    return tuple(orders)


def scan_2d(x: torch.Tensor, orders: tuple[str, ...] = CROSS_ORDERS) -> torch.Tensor:
    """``(B, C, H, W) -> (B, K, C, H*W)``: the image read in each order."""
    return ops.cross_scan(x, orders)


def merge_2d(
    y: torch.Tensor, height: int, width: int, orders: tuple[str, ...] = CROSS_ORDERS
) -> torch.Tensor:
    """``(B, K, C, H*W) -> (B, C, H, W)``: each sequence mapped back and summed over K."""
    return ops.cross_merge(y, height, width, orders)


def scan_3d(x: torch.Tensor, orders: tuple[str, ...] = TRI_ORIENTED_ORDERS) -> torch.Tensor:
    """``(B, C, D, H, W) -> (B, K, C, D*H*W)``."""
    return ops.cross_scan_3d(x, orders)


def merge_3d(
    y: torch.Tensor,
    depth: int,
    height: int,
    width: int,
    orders: tuple[str, ...] = TRI_ORIENTED_ORDERS,
) -> torch.Tensor:
    """``(B, K, C, D*H*W) -> (B, C, D, H, W)``."""
    return ops.cross_merge_3d(y, depth, height, width, orders)


def scan_channels_last(x: torch.Tensor, orders: tuple[str, ...]) -> torch.Tensor:
    """Token sequences of a channels-last image or volume.

    Args:
        x: ``(B, H, W, C)`` or ``(B, D, H, W, C)``.
        orders: 2-D or 3-D order names (matching x's rank).

    Returns:
        ``(B, K, L, C)`` with ``L = H*W`` (or ``D*H*W``), ready for a ``(B, L, D)`` mixer.
    """
    if x.dim() not in (4, 5):
        raise ValueError(
            f"scan_channels_last: x must be (B, H, W, C) or (B, D, H, W, C), got {tuple(x.shape)}."
        )
    moved = x.movedim(-1, 1)
    seqs = scan_2d(moved, orders) if x.dim() == 4 else scan_3d(moved, orders)
    return seqs.transpose(-1, -2)


def merge_channels_last(
    y: torch.Tensor, spatial: tuple[int, ...], orders: tuple[str, ...]
) -> torch.Tensor:
    """Adjoint of :func:`scan_channels_last`: ``(B, K, L, C)`` -> ``(B, *spatial, C)``."""
    if len(spatial) not in (2, 3):
        raise ValueError(
            f"merge_channels_last: spatial must be (H, W) or (D, H, W), got {spatial}."
        )
    seqs = y.transpose(-1, -2)
    merged = (
        merge_2d(seqs, *spatial, orders) if len(spatial) == 2 else merge_3d(seqs, *spatial, orders)
    )
    return merged.movedim(1, -1)
