"""S5: scan vs step, state continuation, resets, mask, bidirectional flip symmetry."""

from __future__ import annotations

import pytest
import torch

from ssmkit.core.s5 import S5, S5State


def _layer(**kwargs: object) -> S5:
    return S5(**{"d_model": 5, "d_state": 8, **kwargs})


@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes_and_every_parameter_gets_a_gradient(bidirectional: bool) -> None:
    layer = _layer(bidirectional=bidirectional, blocks=2)
    y = layer(torch.randn(3, 7, 5))
    assert y.shape == (3, 7, 5)
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    expected_c = (5, 8 if bidirectional else 4, 2)
    assert tuple(layer.C.shape) == expected_c


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("conj_sym", [True, False])
def test_step_equals_forward_with_resets(discretization: str, conj_sym: bool) -> None:
    layer = _layer(discretization=discretization, conj_sym=conj_sym, clip_eigs=True)
    x = torch.randn(2, 12, 5)
    resets = torch.zeros(2, 12, dtype=torch.bool)
    resets[0, 4] = resets[1, 9] = True
    init = layer.init_state(2)
    init.ssm.normal_()
    y, last = layer(x, state=init, resets=resets, return_state=True)
    state, steps = init, []
    for x_t, r_t in zip(x.unbind(1), resets.unbind(1)):
        y_t, state = layer.step(x_t, state, resets=r_t)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state.ssm, last.ssm, atol=1e-5, rtol=1e-4)
    # A reset forgets everything before it.
    torch.testing.assert_close(y[0, 4:], layer(x[:1, 4:])[0], atol=1e-5, rtol=1e-4)


def test_state_continues_a_sequence() -> None:
    layer = _layer(step_scale=0.5)
    x = torch.randn(2, 15, 5)
    y, last = layer(x, return_state=True)
    y1, mid = layer(x[:, :6], return_state=True)
    y2, end = layer(x[:, 6:], state=mid, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(end.ssm, last.ssm, atol=1e-5, rtol=1e-4)


def test_step_scale_changes_the_output() -> None:
    layer = _layer()
    x = torch.randn(1, 6, 5)
    y = layer(x)
    layer.step_scale = 2.0
    assert not torch.allclose(layer(x), y, atol=1e-4)


def test_mask_equals_the_unpadded_sequence() -> None:
    layer = _layer()
    x = torch.randn(2, 10, 5)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :2] = mask[1, 5] = mask[1, 8:] = False  # left, middle and right pads
    x_pad = x.clone()
    x_pad[~mask] = 50.0
    y, last = layer(x_pad, mask=mask, return_state=True)
    y_ref, last_ref = layer(x[1:, mask[1]], return_state=True)
    torch.testing.assert_close(y[1, mask[1]], y_ref[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(last.ssm[1], last_ref.ssm[0], atol=1e-5, rtol=1e-4)
    assert (y[1, ~mask[1]] == 0).all()
    bi = _layer(bidirectional=True)
    torch.testing.assert_close(
        bi(x_pad, mask=mask)[1, mask[1]], bi(x[1:, mask[1]])[0], atol=1e-5, rtol=1e-4
    )


def test_bidirectional_differs_and_is_flip_equivariant() -> None:
    x = torch.randn(2, 9, 5)
    bi = _layer(bidirectional=True)
    uni = _layer()
    state = bi.state_dict()
    uni.load_state_dict({k: (v[:, :4] if k == "C" else v) for k, v in state.items()})
    y = bi(x)
    assert not torch.allclose(y, uni(x), atol=1e-3)
    swapped = _layer(bidirectional=True)
    swapped.load_state_dict(
        {k: (torch.cat([v[:, 4:], v[:, :4]], 1) if k == "C" else v) for k, v in state.items()}
    )
    torch.testing.assert_close(swapped(x.flip(1)).flip(1), y, atol=1e-5, rtol=1e-4)


def test_bidirectional_resets_split_episodes() -> None:
    bi = _layer(bidirectional=True)
    x = torch.randn(1, 10, 5)
    resets = torch.zeros(1, 10, dtype=torch.bool)
    resets[0, 6] = True
    y = bi(x, resets=resets)
    torch.testing.assert_close(y[:, :6], bi(x[:, :6]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y[:, 6:], bi(x[:, 6:]), atol=1e-5, rtol=1e-4)


def test_bad_input_raises() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, D"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"state.ssm must have shape"):
        layer(torch.randn(2, 5, 5), state=S5State(ssm=torch.zeros(2, 3, dtype=torch.complex64)))
    with pytest.raises(ValueError, match="bidirectional"):
        _layer(bidirectional=True)(torch.randn(1, 3, 5), return_state=True)
    with pytest.raises(ValueError, match="divisible by blocks"):
        S5(4, 8, blocks=3)
    with pytest.raises(ValueError, match="step_scale"):
        S5(4, 8, step_scale=0.0)
