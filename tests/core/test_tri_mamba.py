"""TriOrientedMamba: naive three-direction reference on odd volumes, gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.tri_mamba import TriOrientedMamba


def _naive_direction(m: TriOrientedMamba, suffix: str, x: torch.Tensor, z: torch.Tensor):
    """One Mamba direction written out: x, z (E, L) in scan order -> y (E, L)."""
    conv = getattr(m, f"conv1d{suffix}")
    k = conv.weight.shape[-1]
    u = F.silu(F.conv1d(F.pad(x, (k - 1, 0)), conv.weight, conv.bias, groups=x.shape[0]))
    r, n = m.dt_rank, m.d_state
    dbl = getattr(m, f"x_proj{suffix}").weight @ u
    dt_proj = getattr(m, f"dt_proj{suffix}")
    delta = F.softplus(dt_proj.weight @ dbl[:r] + dt_proj.bias[:, None])
    a = -torch.exp(getattr(m, "A_log" if suffix == "" else f"A{suffix}_log"))
    d = getattr(m, f"D{suffix}")
    h = torch.zeros_like(a)
    ys = []
    for t in range(u.shape[1]):
        h = (
            torch.exp(delta[:, t, None] * a) * h
            + delta[:, t, None] * dbl[r : r + n, t] * u[:, t, None]
        )
        ys.append((h @ dbl[r + n :, t] + d * u[:, t]) * F.silu(z[:, t]))
    return torch.stack(ys, 1)


def _naive_tom(m: TriOrientedMamba, x: torch.Tensor) -> torch.Tensor:
    """SegMamba's v3 block on one volume x (1, C, D, H, W)."""
    _, c, depth, height, width = x.shape
    xz = m.in_proj.weight @ x[0].reshape(c, -1)  # (2E, L) row-major d, h, w
    e = m.d_inner
    forward = torch.arange(depth * height * width)
    inter_slice = forward.view(depth, height, width).permute(1, 2, 0).reshape(-1)
    y = torch.zeros(e, forward.numel())
    for suffix, idx in (("", forward), ("_b", forward.flip(0)), ("_s", inter_slice)):
        y[:, idx] += _naive_direction(m, suffix, xz[:e, idx], xz[e:, idx])
    return (m.out_proj.weight @ y).reshape(1, c, depth, height, width)


@pytest.mark.parametrize("shape", [(3, 5, 1), (1, 3, 3), (3, 1, 5)])
def test_matches_naive_three_directions_on_odd_volumes(shape: tuple[int, int, int]) -> None:
    m = TriOrientedMamba(4, d_state=3, d_conv=3)
    x = torch.randn(1, 4, *shape)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _naive_tom(m, x), atol=1e-5, rtol=1e-4)


def test_every_parameter_gets_a_gradient_and_names_match_segmamba() -> None:
    m = TriOrientedMamba(4, d_state=4)
    m(torch.randn(2, 4, 3, 3, 5)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    names = set(dict(m.named_parameters()))
    for key in (
        "A_log",
        "A_b_log",
        "A_s_log",
        "D",
        "D_b",
        "D_s",
        "conv1d_s.weight",
        "dt_proj_b.bias",
    ):
        assert key in names, key


def test_depth_is_read_at_runtime_and_directions_matter() -> None:
    m = TriOrientedMamba(4, d_state=3)
    for depth in (2, 5):
        assert m(torch.randn(1, 4, depth, 3, 3)).shape == (1, 4, depth, 3, 3)
    # The reversed scan makes the first voxel depend on the last one.
    x = torch.randn(1, 4, 3, 3, 3)
    x2 = x.clone()
    x2[..., -1, -1, -1] += 2.0
    assert not torch.allclose(m(x2)[..., 0, 0, 0], m(x)[..., 0, 0, 0])


def test_bad_input_raises() -> None:
    m = TriOrientedMamba(4)
    with pytest.raises(ValueError, match=r"unsqueeze\(2\)"):
        m(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="C = 4"):
        m(torch.randn(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="d_state must be a positive int"):
        TriOrientedMamba(4, d_state=0)
