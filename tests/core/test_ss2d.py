"""SS2D: shapes, gradients, naive per-direction reference, layouts, direction symmetry, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.ss2d import SS2D


def _naive_s6(u, delta, a, b, c, d):
    """Loop S6 for one direction: u, delta (E, L); a (E, N); b, c (N, L); d (E,)."""
    h = torch.zeros_like(a)
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, None] * a) * h + delta[:, t, None] * b[None, :, t] * u[:, t, None]
        ys.append(h @ c[:, t] + d * u[:, t])
    return torch.stack(ys, 1)


def _order_index(order: str, height: int, width: int) -> torch.Tensor:
    grid = torch.arange(height * width).view(height, width)
    idx = grid.reshape(-1) if order.startswith("h") else grid.t().reshape(-1)
    return idx.flip(0) if order.endswith("_flip") else idx


def _naive_ss2d(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D written direction by direction, x (1, H, W, D)."""
    _, height, width, _ = x.shape
    xz = m.in_proj(x)[0].permute(2, 0, 1)
    xi, z = xz.chunk(2, 0) if m.with_z else (xz, None)
    xi = F.silu(m.conv2d(xi[None])[0]).reshape(m.d_inner, -1)  # (E, L) row-major
    e, n, r = m.d_inner, m.d_state, m.dt_rank
    y = torch.zeros_like(xi)
    for k, order in enumerate(m.orders):
        idx = _order_index(order, height, width)
        u = xi[:, idx]
        dbl = m.x_proj_weight[k] @ u
        delta = F.softplus(m.dt_projs_weight[k] @ dbl[:r] + m.dt_projs_bias[k][:, None])
        a = -torch.exp(m.A_logs[k * e : (k + 1) * e])
        yk = _naive_s6(u, delta, a, dbl[r : r + n], dbl[r + n :], m.Ds[k * e : (k + 1) * e])
        y[:, idx] += yk
    y = m.out_norm(y.t().reshape(height, width, e))
    if z is not None:
        y = y * F.silu(z.permute(1, 2, 0))
    return m.out_proj(y)[None]


@pytest.mark.parametrize(
    "orders", [("h",), ("h", "h_flip"), ("h", "v", "h_flip", "v_flip")], ids=["K1", "K2", "K4"]
)
def test_matches_naive_directions_on_odd_grid(orders: tuple[str, ...]) -> None:
    m = SS2D(6, d_state=3, ssm_ratio=1.5, orders=orders)
    x = torch.randn(1, 5, 3, 6)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _naive_ss2d(m, x), atol=1e-5, rtol=1e-4)
    assert m.x_proj_weight.shape == (len(orders), m.dt_rank + 6, 9)
    assert m.A_logs.shape == (len(orders) * 9, 3) and m.Ds.shape == (len(orders) * 9,)


@pytest.mark.parametrize("with_z", [True, False])
def test_every_parameter_gets_a_gradient(with_z: bool) -> None:
    m = SS2D(8, d_state=4, with_z=with_z)
    m(torch.randn(2, 3, 5, 8)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert m.A_logs._no_weight_decay and m.Ds._no_weight_decay


def test_channel_first_equals_channel_last() -> None:
    last = SS2D(8, d_state=4)
    first = SS2D(8, d_state=4, channel_first=True, bias=False)
    first.load_state_dict(last.state_dict())
    x = torch.randn(2, 7, 5, 8)
    torch.testing.assert_close(
        first(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), last(x), atol=1e-5, rtol=1e-4
    )


def test_one_direction_is_causal_and_two_are_not() -> None:
    x = torch.randn(1, 6, 6, 4)
    x2 = x.clone()
    x2[0, -1, -1] += 3.0  # the last pixel in row-major order, far outside the 3x3 conv
    one = SS2D(4, d_state=4, orders=("h",))
    torch.testing.assert_close(one(x2)[0, 0, 0], one(x)[0, 0, 0])
    both = SS2D(4, d_state=4, orders=("h", "h_flip"))
    assert not torch.allclose(both(x2)[0, 0, 0], both(x)[0, 0, 0])


@pytest.mark.parametrize("orders", [("h", "h_flip"), ("h", "v", "h_flip", "v_flip")])
def test_rotation_equivariance_with_swapped_directions(orders: tuple[str, ...]) -> None:
    """Rotating the image by 180° reverses every order: swap each direction with its flip."""
    m = SS2D(4, d_state=3, orders=orders)
    k = len(orders)
    swap = [orders.index(o[:-5] if o.endswith("_flip") else o + "_flip") for o in orders]
    rotated = SS2D(4, d_state=3, orders=orders)
    state = m.state_dict()
    e = m.d_inner
    for name in ("x_proj_weight", "dt_projs_weight", "dt_projs_bias"):
        state[name] = state[name][swap]
    state["A_logs"] = state["A_logs"].view(k, e, -1)[swap].reshape(k * e, -1)
    state["Ds"] = state["Ds"].view(k, e)[swap].reshape(-1)
    state["conv2d.weight"] = state["conv2d.weight"].flip(-1, -2)
    rotated.load_state_dict(state)
    x = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(rotated(x.flip(1, 2)), m(x).flip(1, 2), atol=1e-5, rtol=1e-4)


def test_bad_input_raises() -> None:
    m = SS2D(8, d_state=4)
    with pytest.raises(ValueError, match="channel_first=True"):
        m(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, W, D\)"):
        m(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="unknown scan order"):
        SS2D(8, orders=("h", "zigzag"))
    with pytest.raises(ValueError, match="d_conv must be odd"):
        SS2D(8, d_conv=4)


def test_autocast_bf16_is_finite_and_close() -> None:
    m = SS2D(8, d_state=4)
    x = torch.randn(2, 5, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), m(x), atol=5e-2, rtol=5e-2)
