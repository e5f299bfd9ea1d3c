"""scan_orders: named order sets and channels-last wrappers around the cross-scan kernels."""

from __future__ import annotations

import pytest
import torch

from ssmkit.core.scan_orders import (
    CROSS_ORDERS,
    TRI_ORIENTED_ORDERS,
    check_orders,
    default_orders,
    merge_channels_last,
    scan_channels_last,
)


@pytest.mark.parametrize(
    ("shape", "orders"),
    [((2, 3, 5, 4), CROSS_ORDERS), ((1, 3, 2, 5, 4), TRI_ORIENTED_ORDERS)],
    ids=["2d", "3d"],
)
def test_channels_last_scan_and_merge_are_adjoint(shape, orders) -> None:
    x = torch.randn(*shape)
    seqs = scan_channels_last(x, orders)
    tokens = x[0, ..., 0].numel()
    assert seqs.shape == (shape[0], len(orders), tokens, shape[-1])
    y = torch.randn_like(seqs)
    merged = merge_channels_last(y, tuple(shape[1:-1]), orders)
    assert merged.shape == x.shape
    torch.testing.assert_close((seqs * y).sum(), (x * merged).sum(), atol=1e-4, rtol=1e-5)


def test_named_orders_read_the_grid_as_documented() -> None:
    x = torch.arange(6.0).view(1, 2, 3, 1)  # (B, H, W, C), row-major values 0..5
    seqs = scan_channels_last(x, ("h", "v_flip"))[0, :, :, 0]
    torch.testing.assert_close(seqs[0], torch.arange(6.0))
    torch.testing.assert_close(seqs[1], torch.tensor([5.0, 2.0, 4.0, 1.0, 3.0, 0.0]))
    vol = torch.arange(8.0).view(1, 2, 2, 2, 1)  # (B, D, H, W, C)
    inter = scan_channels_last(vol, ("hwd",))[0, 0, :, 0]
    torch.testing.assert_close(inter[:2], torch.tensor([0.0, 4.0]))  # one pixel, both slices


def test_order_sets_and_errors() -> None:
    assert default_orders(4) == CROSS_ORDERS and len(default_orders(2)) == 2
    assert check_orders(["h", "v"]) == ("h", "v")
    with pytest.raises(ValueError, match="k must be 1, 2 or 4"):
        default_orders(3)
    with pytest.raises(ValueError, match="unknown scan order"):
        check_orders(("h", "hwd"))
    with pytest.raises(ValueError, match="non-empty sequence"):
        check_orders("h")
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        scan_channels_last(torch.randn(2, 3, 4), CROSS_ORDERS)
