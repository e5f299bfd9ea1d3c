"""``cross_scan`` / ``cross_merge``: 2-D and 3-D multi-order scans and their exact adjoints.

Used by VMamba's SS2D (K = 4 orders as groups of one selective scan) and SegMamba's tri-oriented
3-D scan. Scans are gathers with cached permutation indices; merge is the transpose (sum of the
inverse permutations); each is the other's backward. See README.md and ``reference.py``.
"""

from __future__ import annotations

import torch

from ssmkit.kernels._dispatch import resolve_backend
from ssmkit.kernels.cross_scan.reference import (
    ORDERS_2D,
    ORDERS_3D,
    TRI_ORIENTED,
    CrossMerge,
    CrossScan,
    check_orders,
    gather_merge,
    gather_scan,
    index_tables,
    scan_permutation,
    scan_permutation_3d,
)

__all__ = [
    "ORDERS_2D",
    "ORDERS_3D",
    "TRI_ORIENTED",
    "cross_merge",
    "cross_merge_3d",
    "cross_scan",
    "cross_scan_3d",
    "scan_permutation",
    "scan_permutation_3d",
]

_CROSS = ("h", "v", "h_flip", "v_flip")


def _functions(op: str, backend: str, device: torch.device):
    which = resolve_backend(op, backend, device)
    if which == "triton":
        from ssmkit.kernels.cross_scan.triton import merge_triton, scan_triton

        return scan_triton, merge_triton
    # The gather is already the fast CPU path (one index_select / one gather + sum).
    return gather_scan, gather_merge


def _check_input(op: str, name: str, t: object, rank: int, form: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}.")
    if t.dim() != rank:
        raise ValueError(f"{op}: `{name}` must have shape {form}, got {tuple(t.shape)}.")
    if t.dtype == torch.bool:
        raise TypeError(f"{op}: `{name}` must be numeric, got bool; convert it with `.float()`.")
    return t


def _scan(op: str, x: torch.Tensor, dims: tuple[int, ...], orders, valid, backend: str):
    orders = check_orders(orders, valid, op)
    perm, inverse = index_tables(orders, dims, x.device)
    scan_fn, merge_fn = _functions(op, backend, x.device)
    return CrossScan.apply(x.reshape(x.shape[0], x.shape[1], -1), perm, inverse, scan_fn, merge_fn)


def _merge(op: str, y: torch.Tensor, dims: tuple[int, ...], orders, valid, backend: str):
    orders = check_orders(orders, valid, op)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"{op}: spatial sizes must be positive ints, got {dims}.")
    n = 1
    for d in dims:
        n *= d
    if y.shape[1] != len(orders) or y.shape[3] != n:
        raise ValueError(
            f"{op}: `y` must have shape (B, K, C, N) with K = len(orders) = {len(orders)} and "
            f"N = {' * '.join(map(str, dims))} = {n}, got {tuple(y.shape)}."
        )
    perm, inverse = index_tables(orders, dims, y.device)
    scan_fn, merge_fn = _functions(op, backend, y.device)
    out = CrossMerge.apply(y, perm, inverse, scan_fn, merge_fn)
    return out.view(y.shape[0], y.shape[2], *dims)


def cross_scan(
    x: torch.Tensor, orders: tuple[str, ...] = _CROSS, *, backend: str = "auto"
) -> torch.Tensor:
    """Read an image in K orders (VMamba cross-scan; Liu et al., "VMamba", NeurIPS 2024).

    Args:
        x: ``(B, C, H, W)``.
        orders: K names from ``ORDERS_2D`` (``"h"``, ``"v"``, ``"h_snake"``, ``"v_snake"``,
            ``"diag"``, ``"anti_diag"``, each also with ``"_flip"``). Default: VMamba's four.
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"``.

    Returns:
        ``(B, K, C, H*W)``.
    """
    _check_input("cross_scan", "x", x, 4, "(B, C, H, W)")
    return _scan("cross_scan", x, tuple(x.shape[2:]), orders, ORDERS_2D, backend)


def cross_merge(
    y: torch.Tensor, H: int, W: int, orders: tuple[str, ...] = _CROSS, *, backend: str = "auto"
) -> torch.Tensor:
    """Adjoint of :func:`cross_scan`: map each order back to row-major and sum over K.

    Args:
        y: ``(B, K, C, H*W)``.
        H, W: image size.
        orders: the K orders ``y`` was scanned in.
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"``.

    Returns:
        ``(B, C, H, W)``.
    """
    _check_input("cross_merge", "y", y, 4, "(B, K, C, H*W)")
    return _merge("cross_merge", y, (H, W), orders, ORDERS_2D, backend)


def cross_scan_3d(
    x: torch.Tensor, orders: tuple[str, ...] = TRI_ORIENTED, *, backend: str = "auto"
) -> torch.Tensor:
    """Read a volume in K orders (default SegMamba's tri-oriented: forward, reversed, inter-slice).

    Args:
        x: ``(B, C, D, H, W)``.
        orders: K names from ``ORDERS_3D`` (axes slowest to fastest, e.g. ``"dhw"``, ``"hwd"``,
            each also with ``"_flip"``).
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"``.

    Returns:
        ``(B, K, C, D*H*W)``.
    """
    _check_input("cross_scan_3d", "x", x, 5, "(B, C, D, H, W)")
    return _scan("cross_scan_3d", x, tuple(x.shape[2:]), orders, ORDERS_3D, backend)


def cross_merge_3d(
    y: torch.Tensor,
    D: int,
    H: int,
    W: int,
    orders: tuple[str, ...] = TRI_ORIENTED,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Adjoint of :func:`cross_scan_3d`: ``(B, K, C, D*H*W) -> (B, C, D, H, W)``."""
    _check_input("cross_merge_3d", "y", y, 4, "(B, K, C, D*H*W)")
    return _merge("cross_merge_3d", y, (D, H, W), orders, ORDERS_3D, backend)
