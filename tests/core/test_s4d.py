"""S4D: Vandermonde kernel, convolution vs recurrent view, state, mask, resets, bidirectional."""

from __future__ import annotations

import pytest
import torch

from ssmkit.core.s4d import S4D, S4DState


def _layer(**kwargs: object) -> S4D:
    return S4D(**{"d_model": 6, "d_state": 8, **kwargs}).eval()


def test_shapes_and_transposed() -> None:
    x = torch.randn(2, 11, 6)
    layer = _layer()
    assert layer(x).shape == (2, 11, 6)
    transposed = _layer(transposed=True)
    transposed.load_state_dict(layer.state_dict())
    torch.testing.assert_close(transposed(x.transpose(1, 2)).transpose(1, 2), layer(x))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_every_parameter_gets_a_gradient(bidirectional: bool) -> None:
    layer = S4D(6, 8, bidirectional=bidirectional)
    layer(torch.randn(2, 9, 6)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_kernel_is_the_impulse_response_of_the_recurrence() -> None:
    layer = _layer(init="inv")
    log_da, db, c = layer.kernel.discretize()
    k = layer.kernel(7)[0]  # (H, L)
    h = torch.zeros(6, 4, dtype=torch.complex64)
    for t in range(7):
        h = torch.exp(log_da) * h + db * (1.0 if t == 0 else 0.0)
        torch.testing.assert_close(k[:, t], 2 * (c[0] * h).sum(-1).real, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("init", ["lin", "inv", "real", "legs"])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_step_equals_forward(init: str, discretization: str) -> None:
    layer = _layer(init=init, discretization=discretization)
    x = torch.randn(2, 13, 6)
    y = layer(x)
    state = layer.init_state(2)
    steps = []
    for x_t in x.unbind(1):
        y_t, state = layer.step(x_t, state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, atol=1e-4, rtol=1e-4)
    _, last = layer(x, return_state=True)
    torch.testing.assert_close(last.ssm, state.ssm, atol=1e-4, rtol=1e-4)


def test_state_continues_a_sequence() -> None:
    layer = _layer(discretization="bilinear")
    x = torch.randn(2, 20, 6)
    y, last = layer(x, return_state=True)
    y1, mid = layer(x[:, :8], return_state=True)
    y2, end = layer(x[:, 8:], state=mid, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(end.ssm, last.ssm, atol=1e-4, rtol=1e-4)
    assert isinstance(end, S4DState) and end.index([1]).ssm.shape == (1, 6, 4)


@pytest.mark.parametrize("side", ["right", "left"])
def test_mask_equals_the_unpadded_sequence(side: str) -> None:
    layer = _layer()
    x = torch.randn(2, 10, 6)
    state = S4DState(ssm=torch.randn(2, 6, 4, dtype=torch.complex64))
    mask = torch.ones(2, 10, dtype=torch.bool)
    real = slice(0, 7) if side == "right" else slice(3, 10)
    mask[1] = False
    mask[1, real] = True
    x_pad = x.clone()
    x_pad[1, ~mask[1]] = 100.0  # garbage in pads must not leak
    y, last = layer(x_pad, mask=mask, state=state, return_state=True)
    y_ref, last_ref = layer(x[1:, real], state=state.index([1]), return_state=True)
    torch.testing.assert_close(y[1:, real], y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last.ssm[1:], last_ref.ssm, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y[:1], layer(x[:1], state=state.index([0])), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("side", ["right", "left"])
def test_bidirectional_mask_equals_the_unpadded_sequence(side: str) -> None:
    layer = _layer(bidirectional=True)
    x = torch.randn(1, 9, 6)
    real = slice(0, 6) if side == "right" else slice(3, 9)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, real] = True
    x_pad = x.masked_fill(~mask[..., None], -7.0)
    y = layer(x_pad, mask=mask)
    torch.testing.assert_close(y[:, real], layer(x[:, real]), atol=1e-5, rtol=1e-4)


def test_resets_equal_separate_episodes() -> None:
    layer = _layer()
    x = torch.randn(1, 12, 6)
    resets = torch.zeros(1, 12, dtype=torch.bool)
    resets[0, 5] = True
    y = layer(x, resets=resets)
    torch.testing.assert_close(y[:, :5], layer(x[:, :5]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y[:, 5:], layer(x[:, 5:]), atol=1e-4, rtol=1e-4)
    # No reset at all: the recurrent view equals the convolution view.
    torch.testing.assert_close(
        layer(x, resets=torch.zeros_like(resets)), layer(x), atol=1e-4, rtol=1e-4
    )


def test_bidirectional_differs_and_is_flip_equivariant() -> None:
    x = torch.randn(2, 9, 6)
    bi = _layer(bidirectional=True)
    uni = _layer()
    uni.load_state_dict({k: (v[:1] if k == "kernel.C" else v) for k, v in bi.state_dict().items()})
    y = bi(x)
    assert not torch.allclose(y, uni(x), atol=1e-3)
    # The output at t = 0 sees the future only through the backward kernel.
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(bi(x2)[:, 0], y[:, 0])
    torch.testing.assert_close(uni(x2)[:, 0], uni(x)[:, 0])


def _ssm_output(layer: S4D, x: torch.Tensor) -> torch.Tensor:
    """GELU of the SSM output (the input of the dropout), captured with a hook."""
    seen: list[torch.Tensor] = []
    handle = layer.dropout.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    layer(x)
    handle.remove()
    return seen[0]


def test_bidirectional_halves_are_flip_equivariant() -> None:
    """Causal half = the unidirectional layer; anti-causal half = it on the flipped input,
    one step later (the backward kernel starts at lag 1, as in s4's padding)."""
    x = torch.randn(2, 9, 6)
    bi = _layer(bidirectional=True)
    with torch.no_grad():
        bi.D.zero_()
    uni = _layer()
    state = bi.state_dict()
    uni.load_state_dict({k: (v[1:] if k == "kernel.C" else v) for k, v in state.items()})
    backward_only = _layer(bidirectional=True)
    backward_only.load_state_dict(
        {
            k: (v * torch.tensor([0.0, 1.0])[:, None, None, None] if k == "kernel.C" else v)
            for k, v in state.items()
        }
    )
    mirrored = _ssm_output(uni, x.flip(1)).flip(-1)  # (B, H, L)
    anti = _ssm_output(backward_only, x)
    torch.testing.assert_close(anti[..., :-1], mirrored[..., 1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(anti[..., -1], torch.zeros_like(anti[..., -1]))
    forward_only = _layer(bidirectional=True)
    forward_only.load_state_dict(
        {
            k: (v * torch.tensor([1.0, 0.0])[:, None, None, None] if k == "kernel.C" else v)
            for k, v in state.items()
        }
    )
    uni.load_state_dict({k: (v[:1] if k == "kernel.C" else v) for k, v in state.items()})
    torch.testing.assert_close(forward_only(x), uni(x), atol=1e-5, rtol=1e-4)


def test_ssm_parameters_carry_optimizer_hints() -> None:
    layer = S4D(4, 4, lr=1e-3)
    for p in (layer.kernel.log_dt, layer.kernel.log_A_real, layer.kernel.A_imag):
        assert p._no_weight_decay and p._optim == {"weight_decay": 0.0, "lr": 1e-3}
    assert not hasattr(layer.output_linear[0].weight, "_no_weight_decay")


def test_bad_input_raises() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, D"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(TypeError, match="mask must be a bool"):
        layer(torch.randn(2, 5, 6), mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"resets must have shape \(B, L\)"):
        layer(torch.randn(2, 5, 6), resets=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="state must be a S4DState"):
        layer(torch.randn(2, 5, 6), state=torch.zeros(2, 6, 4))
    with pytest.raises(ValueError, match="bidirectional"):
        _layer(bidirectional=True).step(torch.randn(2, 6), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="d_state must be even"):
        S4D(4, 5)
    with pytest.raises(ValueError, match="discretization"):
        S4D(4, 4, discretization="euler")
