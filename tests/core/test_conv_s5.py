"""ConvS5: scan vs step, state continuation, resets, mask, equivalence to per-pixel S5."""

from __future__ import annotations

import pytest
import torch

from ssmkit.core.conv_s5 import ConvS5
from ssmkit.core.s5 import S5, S5State


def _layer(**kwargs: object) -> ConvS5:
    return ConvS5(**{"in_channels": 3, "hidden_channels": 4, "d_state": 6, **kwargs})


def test_shapes_and_every_parameter_gets_a_gradient() -> None:
    layer = _layer(blocks=3, c_kernel_size=1)
    y = layer(torch.randn(2, 4, 3, 5, 7))
    assert y.shape == (2, 4, 4, 5, 7)
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_step_equals_forward_with_initial_state_and_resets(discretization: str) -> None:
    layer = _layer(discretization=discretization)
    x = torch.randn(2, 6, 3, 5, 4)
    resets = torch.zeros(2, 6, dtype=torch.bool)
    resets[1, 3] = True
    state = layer.init_state(2, spatial_size=(5, 4))
    state.ssm.normal_()
    y, last = layer(x, state=state, resets=resets, return_state=True)
    h, steps = state, []
    for t, x_t in enumerate(x.unbind(1)):
        if t == 3:  # restart sequence 1 by hand
            h = S5State(ssm=h.ssm * torch.tensor([1.0, 0.0])[:, None, None, None])
        y_t, h = layer.step(x_t, h)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h.ssm, last.ssm, atol=1e-5, rtol=1e-4)


def test_state_continues_a_video() -> None:
    layer = _layer()
    x = torch.randn(1, 7, 3, 4, 4)
    y, last = layer(x, return_state=True)
    y1, mid = layer(x[:, :3], return_state=True)
    y2, end = layer(x[:, 3:], state=mid, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(end.ssm, last.ssm, atol=1e-5, rtol=1e-4)


def test_mask_equals_the_unpadded_video() -> None:
    layer = _layer()
    x = torch.randn(2, 6, 3, 4, 5)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 0] = mask[1, 4:] = False
    x_pad = x.clone()
    x_pad[~mask] = 9.0
    y, last = layer(x_pad, mask=mask, return_state=True)
    y_ref, last_ref = layer(x[1:, 1:4], return_state=True)
    torch.testing.assert_close(y[1:, 1:4], y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(last.ssm[1:], last_ref.ssm, atol=1e-5, rtol=1e-4)


def test_pointwise_kernels_equal_s5_at_every_pixel() -> None:
    conv = ConvS5(3, 3, 6, kernel_size=1)
    s5 = S5(3, 6)
    with torch.no_grad():
        conv.D.copy_(torch.diag(s5.D))
        for name in ("Lambda_re", "Lambda_im", "log_step"):
            getattr(conv, name).copy_(getattr(s5, name))
        conv.B.copy_(s5.B[:, :, None, None])
        conv.C.copy_(s5.C[:, :, None, None])
    x = torch.randn(2, 5, 3, 2, 3)
    y = conv(x)
    pixels = x.permute(0, 3, 4, 1, 2).reshape(12, 5, 3)  # (B·H·W, T, C)
    y_ref = s5(pixels).reshape(2, 2, 3, 5, 3).permute(0, 3, 4, 1, 2)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)


def test_bad_input_raises() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, C, H, W\)"):
        layer(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="spatial_size"):
        layer.init_state(2)
    with pytest.raises(ValueError, match="state.ssm must have shape"):
        layer(torch.randn(1, 2, 3, 4, 4), state=layer.init_state(1, spatial_size=(3, 4)))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        layer(torch.randn(1, 2, 3, 4, 4), mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="odd"):
        ConvS5(3, 4, 6, kernel_size=2)


def test_autocast_keeps_the_state_complex64() -> None:
    layer = _layer()
    x = torch.randn(1, 3, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, last = layer(x, return_state=True)
    assert last.ssm.dtype == torch.complex64 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), layer(x), atol=5e-2, rtol=5e-2)
