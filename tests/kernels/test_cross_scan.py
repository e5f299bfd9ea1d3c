"""cross_scan / cross_merge: permutations, exact adjointness, VMamba's merge, 3-D orders, grads."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ssmkit.kernels import (
    cross_merge,
    cross_merge_3d,
    cross_scan,
    cross_scan_3d,
    scan_permutation,
    scan_permutation_3d,
)
from ssmkit.kernels.cross_scan import ORDERS_2D, ORDERS_3D

BACKENDS = ["ref", "cpu"]
if importlib.util.find_spec("triton") is not None:
    BACKENDS.append(pytest.param("triton", marks=pytest.mark.triton))

ORDER_SETS = {
    1: ("h",),
    2: ("h", "h_flip"),
    4: ("h", "v", "h_flip", "v_flip"),
    8: ("h_snake", "v_snake", "diag", "anti_diag", "h_snake_flip", "v_snake_flip", "diag_flip",
        "anti_diag_flip"),
}  # fmt: skip


@pytest.mark.parametrize("order", ORDERS_2D)
@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (4, 4), (7, 2)])
def test_every_order_is_a_permutation(order, height, width):
    perm = scan_permutation(order, height, width)
    assert torch.equal(perm.sort().values, torch.arange(height * width))


def test_known_orders():
    grid = torch.arange(6).view(2, 3)
    assert scan_permutation("v", 2, 3).tolist() == grid.t().reshape(-1).tolist()
    assert scan_permutation("h_flip", 2, 3).tolist() == [5, 4, 3, 2, 1, 0]
    assert scan_permutation("h_snake", 2, 3).tolist() == [0, 1, 2, 5, 4, 3]
    assert scan_permutation("v_snake", 2, 3).tolist() == [0, 3, 4, 1, 2, 5]
    assert scan_permutation("diag", 2, 3).tolist() == [0, 1, 3, 2, 4, 5]
    assert scan_permutation("anti_diag", 2, 3).tolist() == [2, 1, 5, 0, 4, 3]
    # consecutive positions of a snake are grid neighbours
    for order in ("h_snake", "v_snake"):
        p = scan_permutation(order, 5, 4)
        i, j = p // 4, p % 4
        assert int(((i[1:] - i[:-1]).abs() + (j[1:] - j[:-1]).abs()).max()) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (7, 4)])
def test_merge_is_the_adjoint_of_scan(k, height, width, backend):
    orders = ORDER_SETS[k]
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    y = torch.randn(2, k, 3, height * width, dtype=torch.float64)
    lhs = (cross_scan(x, orders, backend=backend) * y).sum()
    rhs = (x * cross_merge(y, height, width, orders, backend=backend)).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * max(1.0, abs(float(lhs)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("orders", [("dhw", "dhw_flip", "hwd"), ORDERS_3D])
@pytest.mark.parametrize("dims", [(1, 1, 1), (3, 5, 7), (2, 3, 1)])
def test_3d_merge_is_the_adjoint_of_scan(dims, orders, backend):
    x = torch.randn(2, 3, *dims, dtype=torch.float64)
    n = dims[0] * dims[1] * dims[2]
    y = torch.randn(2, len(orders), 3, n, dtype=torch.float64)
    lhs = (cross_scan_3d(x, orders, backend=backend) * y).sum()
    rhs = (x * cross_merge_3d(y, *dims, orders, backend=backend)).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * max(1.0, abs(float(lhs)))


def test_vmamba_cross_scan_and_merge_formulas():
    x = torch.randn(2, 3, 5, 7)
    ys = cross_scan(x)
    row, col = x.flatten(2), x.transpose(2, 3).flatten(2)
    torch.testing.assert_close(ys, torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1))
    y = torch.randn(2, 4, 3, 35)
    col_sum = (y[:, 1] + y[:, 3].flip(-1)).view(2, 3, 7, 5).transpose(2, 3)
    expected = (y[:, 0] + y[:, 2].flip(-1)).view(2, 3, 5, 7) + col_sum
    torch.testing.assert_close(cross_merge(y, 5, 7), expected)


def test_segmamba_tri_oriented_orders():
    x = torch.randn(1, 2, 3, 4, 5)
    ys = cross_scan_3d(x)
    flat = x.flatten(2)
    inter_slice = x.permute(0, 1, 3, 4, 2).reshape(1, 2, -1)  # depth fastest
    torch.testing.assert_close(ys, torch.stack([flat, flat.flip(-1), inter_slice], dim=1))
    assert scan_permutation_3d("hwd", 2, 1, 2).tolist() == [0, 2, 1, 3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_is_the_other_op(backend):
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    orders = ORDER_SETS[8]
    y = cross_scan(x, orders, backend=backend)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, cross_merge(g, 5, 6, orders, backend="ref"))
    y2 = torch.randn(2, 8, 3, 30, requires_grad=True)
    m = cross_merge(y2, 5, 6, orders, backend=backend)
    gm = torch.randn_like(m)
    (gy,) = torch.autograd.grad(m, y2, gm)
    torch.testing.assert_close(gy, cross_scan(gm, orders, backend="ref"))


def test_gradcheck_float64_incl_double_backward():
    x = torch.randn(1, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    orders = ("diag", "v_snake_flip")
    assert torch.autograd.gradcheck(lambda x: cross_scan(x, orders), (x,))
    assert torch.autograd.gradgradcheck(lambda x: cross_scan(x, orders), (x,))


def test_bf16_and_non_contiguous_input():
    x = torch.randn(2, 3, 6, 5).transpose(2, 3)  # (2, 3, 5, 6), non-contiguous
    ys = cross_scan(x.bfloat16(), ("h", "v"))
    assert ys.dtype == torch.bfloat16
    torch.testing.assert_close(ys[:, 0].float(), x.bfloat16().float().reshape(2, 3, 30))


def test_bad_inputs():
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="unknown scan order"):
        cross_scan(x, ("h", "zigzag"))
    with pytest.raises(ValueError, match="non-empty sequence"):
        cross_scan(x, "h")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        cross_scan(x[0])
    with pytest.raises(ValueError, match="K = len\\(orders\\) = 4"):
        cross_merge(torch.randn(2, 2, 3, 20), 4, 5)
    with pytest.raises(ValueError, match="N = 4 \\* 6 = 24"):
        cross_merge(torch.randn(2, 4, 3, 20), 4, 6)
    with pytest.raises(ValueError, match="positive ints"):
        scan_permutation("h", 0, 3)
    with pytest.raises(ValueError, match="unknown scan order"):
        cross_scan_3d(torch.randn(1, 1, 2, 2, 2), ("h",))
