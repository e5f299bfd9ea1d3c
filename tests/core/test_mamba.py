"""Mamba-1 mixer: shapes, gradients, step == forward, state continuation, masks, resets, inits."""

from __future__ import annotations

import math

import pytest
import torch

from ssmkit.core import ConvSSMState, Mamba
from ssmkit.core import mamba as mamba_module

D_MODEL = 16


def _model(**kwargs: object) -> Mamba:
    return Mamba(D_MODEL, **{"d_state": 4, **kwargs})  # type: ignore[arg-type]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert a.shape == b.shape
    if a.numel() == 0:
        return
    err = (a - b).abs().max().item()
    assert err <= tol * (1 + b.abs().max().item()), f"max abs error {err:.3e}"


def test_shapes_and_parameter_names_match_mamba_ssm() -> None:
    m = _model(d_state=8, expand=2, d_conv=4)
    y, state = m(torch.randn(3, 10, D_MODEL), return_state=True)
    assert y.shape == (3, 10, D_MODEL)
    assert state.conv.shape == (3, 32, 3) and state.ssm.shape == (3, 32, 8)
    assert state.ssm.dtype == torch.float32
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {
        "A_log": (32, 8),
        "D": (32,),
        "in_proj.weight": (64, 16),
        "conv1d.weight": (32, 1, 4),
        "conv1d.bias": (32,),
        "x_proj.weight": (1 + 16, 32),
        "dt_proj.weight": (32, 1),
        "dt_proj.bias": (32,),
        "out_proj.weight": (16, 32),
    }


def test_inits_follow_the_paper() -> None:
    m = Mamba(64, d_state=16, dt_min=0.001, dt_max=0.1)
    assert m.dt_rank == math.ceil(64 / 16)
    assert torch.allclose(m.A_log.exp(), torch.arange(1, 17.0).expand(128, 16))
    assert torch.equal(m.D, torch.ones(128))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    bound = m.dt_rank**-0.5
    assert m.dt_proj.weight.abs().max() <= bound
    assert m.A_log._no_weight_decay and m.D._no_weight_decay and m.dt_proj.bias._no_reinit
    assert m.A_log.dtype == m.D.dtype == torch.float32
    m16 = Mamba(16, dtype=torch.bfloat16)
    assert m16.in_proj.weight.dtype == torch.bfloat16 and m16.A_log.dtype == torch.float32


def test_every_parameter_gets_a_gradient_including_the_state() -> None:
    m = _model()
    state = m.init_state(2)
    state = ConvSSMState(
        conv=torch.randn_like(state.conv, requires_grad=True),
        ssm=torch.randn_like(state.ssm, requires_grad=True),
    )
    y, last = m(torch.randn(2, 9, D_MODEL), state=state, return_state=True)
    (y.square().sum() + last.ssm.sum() + last.conv.sum()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert state.conv.grad.abs().sum() > 0 and state.ssm.grad.abs().sum() > 0


@pytest.mark.parametrize("d_conv", [1, 4])
def test_step_equals_forward(d_conv: int) -> None:
    m = _model(d_conv=d_conv)
    x = torch.randn(2, 13, D_MODEL)
    y, final = m(x, return_state=True)
    state = m.init_state(2)
    outs = []
    for t in range(x.shape[1]):
        y_t, state = m.step(x[:, t], state)
        outs.append(y_t)
    _close(torch.stack(outs, 1), y)
    _close(state.ssm, final.ssm)
    _close(state.conv, final.conv)


def test_forward_with_state_continues_a_sequence() -> None:
    m = _model()
    x = torch.randn(2, 17, D_MODEL)
    y, final = m(x, return_state=True)
    y1, s1 = m(x[:, :6], return_state=True)
    y2, s2 = m(x[:, 6:], state=s1, return_state=True)
    _close(torch.cat([y1, y2], 1), y)
    _close(s2.ssm, final.ssm)
    _close(s2.conv, final.conv)
    # a chunk shorter than the conv window
    y2a, s2a = m(x[:, 6:8], state=s1, return_state=True)
    y2b = m(x[:, 8:], state=s2a)
    _close(torch.cat([y1, y2a, y2b], 1), y)


@pytest.mark.parametrize("side", ["right", "left"])
def test_mask_equals_running_the_unpadded_sequences(side: str) -> None:
    m = _model()
    lengths = [9, 5, 2]
    total = 11
    seqs = [torch.randn(1, n, D_MODEL) for n in lengths]
    x = torch.randn(3, total, D_MODEL) * 100  # pads hold junk that must not leak
    mask = torch.zeros(3, total, dtype=torch.bool)
    for b, n in enumerate(lengths):
        sl = slice(0, n) if side == "right" else slice(total - n, total)
        x[b, sl] = seqs[b][0]
        mask[b, sl] = True
    start = torch.randn(3, m.d_inner, 3), torch.randn(3, m.d_inner, m.d_state)
    state = ConvSSMState(conv=start[0], ssm=start[1])
    y, final = m(x, mask=mask, state=state, return_state=True)
    assert (y[~mask] == 0).all()
    for b in range(len(lengths)):
        ref, ref_state = m(seqs[b], state=state.index([b]), return_state=True)
        _close(y[b][mask[b]], ref[0])
        _close(final.ssm[b], ref_state.ssm[0])
        _close(final.conv[b], ref_state.conv[0])


def test_resets_equal_running_episodes_separately() -> None:
    m = _model()
    x = torch.randn(2, 14, D_MODEL)
    resets = torch.zeros(2, 14, dtype=torch.bool)
    resets[0, 5] = resets[0, 6] = resets[1, 0] = resets[1, 12] = True
    start = m.init_state(2)
    start = ConvSSMState(conv=torch.randn_like(start.conv), ssm=torch.randn_like(start.ssm))
    y, final = m(x, resets=resets, state=start, return_state=True)
    # row 0: episodes [0, 5) (from the given state), [5, 6), [6, 14)
    _close(y[0, :5], m(x[:1, :5], state=start.index(0))[0])
    _close(y[0, 5:6], m(x[:1, 5:6])[0])
    ref, ref_state = m(x[:1, 6:], return_state=True)
    _close(y[0, 6:], ref[0])
    _close(final.ssm[0], ref_state.ssm[0])
    _close(final.conv[0], ref_state.conv[0])
    # row 1: the reset at t = 0 discards the given state
    _close(y[1, :12], m(x[1:, :12])[0])
    # step with resets matches forward with resets
    state = start
    outs = []
    for t in range(14):
        y_t, state = m.step(x[:, t], state, resets=resets[:, t])
        outs.append(y_t)
    _close(torch.stack(outs, 1), y)


def test_state_index_and_to() -> None:
    m = _model()
    x = torch.randn(3, 8, D_MODEL)
    _, state = m(x, return_state=True)
    sub = state.index(torch.tensor([2, 0]))
    assert sub.batch_size == 2
    assert torch.equal(sub.ssm[0], state.ssm[2]) and torch.equal(sub.conv[1], state.conv[0])
    assert torch.equal(state.index(torch.tensor([False, True, False])).ssm[0], state.ssm[1])
    moved = state.to("cpu")
    assert moved.ssm.dtype == torch.float32 and torch.equal(moved.conv, state.conv)
    nxt = torch.randn(3, 4, D_MODEL)
    _close(m(nxt[[2, 0]], state=sub), m(nxt, state=state)[[2, 0]])


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_dt_and_ssm_parameters_stay_fp32_under_autocast(
    amp_dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, torch.dtype] = {}
    real = mamba_module.ops.selective_scan

    def spy(u, delta, A, B, C, D=None, **kwargs):
        seen.update(u=u.dtype, delta=delta.dtype, A=A.dtype, D=D.dtype)
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return real(u, delta, A, B, C, D, **kwargs)

    monkeypatch.setattr(mamba_module.ops, "selective_scan", spy)
    m = _model()
    with torch.autocast("cpu", dtype=amp_dtype):
        y = m(torch.randn(2, 7, D_MODEL))
    assert y.dtype == amp_dtype
    assert seen == {
        "u": amp_dtype,
        "delta": torch.float32,
        "A": torch.float32,
        "D": torch.float32,
        "autocast": False,
    }
    assert torch.isfinite(y).all()


def test_bad_input_raises() -> None:
    m = _model()
    with pytest.raises(ValueError, match=r"\(B, L, D=16\)"):
        m(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(5, D_MODEL))
    with pytest.raises(TypeError, match="floating"):
        m(torch.ones(2, 5, D_MODEL, dtype=torch.long))
    with pytest.raises(TypeError, match="mask must be a bool"):
        m(torch.randn(2, 5, D_MODEL), mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="resets must have shape"):
        m(torch.randn(2, 5, D_MODEL), resets=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="ConvSSMState"):
        m(torch.randn(2, 5, D_MODEL), state=torch.zeros(2, 32, 4))
    with pytest.raises(ValueError, match="one token"):
        m.step(torch.randn(2, 1, D_MODEL), m.init_state(2))
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(8, dt_init="zeros")
    with pytest.raises(ValueError, match="d_state"):
        Mamba(8, d_state=0)
