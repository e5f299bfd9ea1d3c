"""Reference 2-D / 3-D cross-scan and cross-merge as gathers with precomputed permutations.

Cross-scan (VMamba SS2D, REFERENCES.md §1.9) reads an image in K orders, each a permutation P_k
of the H*W (or D*H*W) positions: ``scan(x)_k = x[..., P_k]``. Cross-merge is its exact adjoint,
``merge(y) = Σ_k P_kᵀ y_k``, i.e. ``Σ_k y_k[..., P_k⁻¹]``, so ``<scan(x), y> = <x, merge(y)>`` and
each op is the other's backward.

2-D orders (row-major position ``i*W + j``):

- ``"h"`` row-major, ``"v"`` column-major;
- ``"h_snake"`` / ``"v_snake"``: boustrophedon, every other row (column) reversed;
- ``"diag"``: wavefronts ``i + j = s`` from the top-left corner, ``i`` ascending within a front;
- ``"anti_diag"``: wavefronts ``i + (W-1-j) = s`` from the top-right corner, ``i`` ascending;
- any of them with ``"_flip"``: the same order reversed.

3-D orders (row-major position ``(d*H + i)*W + j``) name the axes from slowest to fastest, e.g.
``"dhw"`` (row-major flatten), ``"hwd"`` (depth fastest: SegMamba's inter-slice scan), any of the
six permutations of ``d``, ``h``, ``w``, each with a ``"_flip"`` variant. SegMamba's tri-oriented
set is ``("dhw", "dhw_flip", "hwd")``.
"""

from __future__ import annotations

import functools
import itertools

import torch

ORDERS_2D = tuple(
    name + suffix
    for name in ("h", "v", "h_snake", "v_snake", "diag", "anti_diag")
    for suffix in ("", "_flip")
)
ORDERS_3D = tuple(
    "".join(axes) + suffix for axes in itertools.permutations("dhw") for suffix in ("", "_flip")
)
TRI_ORIENTED = ("dhw", "dhw_flip", "hwd")


def _base_2d(name: str, height: int, width: int) -> torch.Tensor:
    grid = torch.arange(height * width).view(height, width)
    if name == "h":
        return grid.reshape(-1)
    if name == "v":
        return grid.t().reshape(-1)
    if name == "h_snake":
        rows = grid.clone()
        rows[1::2] = rows[1::2].flip(-1)
        return rows.reshape(-1)
    if name == "v_snake":
        cols = grid.t().clone()
        cols[1::2] = cols[1::2].flip(-1)
        return cols.reshape(-1)
    if name in ("diag", "anti_diag"):
        i = torch.arange(height).view(-1, 1).expand(height, width)
        j = torch.arange(width).view(1, -1).expand(height, width)
        front = i + (j if name == "diag" else width - 1 - j)
        key = front * height + i  # sort by wavefront, then by row
        return torch.argsort(key.reshape(-1))
    raise AssertionError(name)


def check_orders(orders: tuple[str, ...] | list[str], valid: tuple[str, ...], op: str) -> tuple:
    """Validate a sequence of order names; returns it as a tuple."""
    if isinstance(orders, str) or not len(orders):
        raise ValueError(
            f"{op}: `orders` must be a non-empty sequence of order names (e.g. ('h', 'v')), "
            f"got {orders!r}."
        )
    bad = [o for o in orders if o not in valid]
    if bad:
        raise ValueError(f"{op}: unknown scan order(s) {bad}; expected names from {valid}.")
    return tuple(orders)


@functools.cache
def _permutation_cpu(order: str, dims: tuple[int, ...]) -> torch.Tensor:
    flip = order.endswith("_flip")
    base = order[: -len("_flip")] if flip else order
    if len(dims) == 2:
        perm = _base_2d(base, *dims)
    else:
        grid = torch.arange(dims[0] * dims[1] * dims[2]).view(*dims)
        perm = grid.permute(*("dhw".index(a) for a in base)).reshape(-1)
    return perm.flip(0) if flip else perm


def scan_permutation(order: str, height: int, width: int) -> torch.Tensor:
    """Row-major positions visited by a 2-D scan order: ``seq[k] = x_flat[perm[k]]``.

    Args:
        order: a name from :data:`ORDERS_2D`.
        height, width: image size (any positive ints).

    Returns:
        LongTensor ``(H*W,)``, a permutation.
    """
    check_orders((order,), ORDERS_2D, "scan_permutation")
    _check_dims((height, width), "scan_permutation")
    return _permutation_cpu(order, (height, width)).clone()


def scan_permutation_3d(order: str, depth: int, height: int, width: int) -> torch.Tensor:
    """Row-major positions visited by a 3-D scan order (see :data:`ORDERS_3D`): ``(D*H*W,)``."""
    check_orders((order,), ORDERS_3D, "scan_permutation_3d")
    _check_dims((depth, height, width), "scan_permutation_3d")
    return _permutation_cpu(order, (depth, height, width)).clone()


def _check_dims(dims: tuple[int, ...], op: str) -> None:
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"{op}: spatial sizes must be positive ints, got {dims}.")


@functools.cache
def _index_tables(orders: tuple[str, ...], dims: tuple[int, ...], device: torch.device):
    """``(perm (K, N), inverse (K, N))`` on ``device``, cached per (orders, size, device)."""
    perm = torch.stack([_permutation_cpu(o, dims) for o in orders])
    inverse = torch.argsort(perm, dim=1)
    return perm.to(device), inverse.to(device)


def index_tables(
    orders: tuple[str, ...], dims: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutations ``(K, N)`` and their inverses ``(K, N)`` for ``orders`` on ``device``."""
    return _index_tables(tuple(orders), tuple(dims), torch.device(device))


def gather_scan(x_flat: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``(B, C, N) -> (B, K, C, N)``: ``out[:, k] = x_flat[..., perm[k]]``."""
    bsz, channels, n = x_flat.shape
    k = perm.shape[0]
    out = torch.index_select(x_flat, 2, perm.reshape(-1)).view(bsz, channels, k, n)
    return out.transpose(1, 2).contiguous()


def gather_merge(y: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """``(B, K, C, N) -> (B, C, N)``: ``Σ_k y[:, k][..., inverse[k]]`` (the adjoint of the scan)."""
    bsz, k, channels, n = y.shape
    index = inverse.view(1, k, 1, n).expand(bsz, k, channels, n)
    return torch.gather(y, 3, index).sum(dim=1)


class CrossScan(torch.autograd.Function):
    """``x (B, C, N) -> (B, K, C, N)``; backward is :class:`CrossMerge` (the adjoint)."""

    @staticmethod
    def forward(ctx, x_flat, perm, inverse, scan_fn, merge_fn):  # type: ignore[override]
        ctx.save_for_backward(perm, inverse)
        ctx.fns = (scan_fn, merge_fn)
        return scan_fn(x_flat, perm)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        perm, inverse = ctx.saved_tensors
        scan_fn, merge_fn = ctx.fns
        return CrossMerge.apply(grad, perm, inverse, scan_fn, merge_fn), None, None, None, None


class CrossMerge(torch.autograd.Function):
    """``y (B, K, C, N) -> (B, C, N)``; backward is :class:`CrossScan`."""

    @staticmethod
    def forward(ctx, y, perm, inverse, scan_fn, merge_fn):  # type: ignore[override]
        ctx.save_for_backward(perm, inverse)
        ctx.fns = (scan_fn, merge_fn)
        return merge_fn(y, inverse)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        perm, inverse = ctx.saved_tensors
        scan_fn, merge_fn = ctx.fns
        return CrossScan.apply(grad, perm, inverse, scan_fn, merge_fn), None, None, None, None
