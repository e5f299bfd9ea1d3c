"""Mamba-2 mixer and the gated RMS norm: step == forward (ngroups > 1), state, masks, resets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmkit.core import ConvSSMState, GatedRMSNorm, Mamba2, RMSNorm

D_MODEL = 16


def _model(**kwargs: object) -> Mamba2:
    return Mamba2(D_MODEL, **{"d_state": 8, "headdim": 8, "chunk_size": 4, **kwargs})  # type: ignore[arg-type]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert a.shape == b.shape
    if a.numel() == 0:
        return
    err = (a - b).abs().max().item()
    assert err <= tol * (1 + b.abs().max().item()), f"max abs error {err:.3e}"


def test_shapes_parameters_and_inits() -> None:
    m = _model(ngroups=2, A_init_range=(1, 16))
    assert (m.nheads, m.conv_dim) == (4, 32 + 2 * 2 * 8)
    y, state = m(torch.randn(2, 10, D_MODEL), return_state=True)
    assert y.shape == (2, 10, D_MODEL)
    assert state.conv.shape == (2, m.conv_dim, 3) and state.ssm.shape == (2, 4, 8, 8)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {
        "dt_bias": (4,),
        "A_log": (4,),
        "D": (4,),
        "in_proj.weight": (2 * 32 + 2 * 2 * 8 + 4, 16),
        "conv1d.weight": (m.conv_dim, 1, 4),
        "conv1d.bias": (m.conv_dim,),
        "norm.weight": (32,),
        "out_proj.weight": (16, 32),
    }
    assert ((m.A_log.exp() >= 1) & (m.A_log.exp() <= 16)).all()
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    assert m.A_log._no_weight_decay and m.D._no_weight_decay and m.dt_bias._no_weight_decay
    assert _model(D_has_hdim=True).D.shape == (32,)


def test_every_parameter_gets_a_gradient() -> None:
    m = _model(ngroups=2)
    y = m(torch.randn(2, 9, D_MODEL))
    y.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ngroups": 2},
        {"ngroups": 4, "D_has_hdim": True, "norm_before_gate": True},
        {"rmsnorm": False, "dt_limit": (0.01, 0.05)},
    ],
)
def test_step_equals_forward(kwargs: dict) -> None:
    m = _model(**kwargs)
    x = torch.randn(2, 11, D_MODEL)
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
    m = _model(ngroups=2)
    x = torch.randn(2, 15, D_MODEL)
    y, final = m(x, return_state=True)
    y1, s1 = m(x[:, :7], return_state=True)  # split inside a chunk
    y2, s2 = m(x[:, 7:], state=s1, return_state=True)
    _close(torch.cat([y1, y2], 1), y)
    _close(s2.ssm, final.ssm)
    _close(s2.conv, final.conv)


@pytest.mark.parametrize("side", ["right", "left"])
def test_mask_equals_running_the_unpadded_sequences(side: str) -> None:
    m = _model()
    lengths, total = [9, 3], 10
    seqs = [torch.randn(1, n, D_MODEL) for n in lengths]
    x = torch.randn(2, total, D_MODEL) * 100
    mask = torch.zeros(2, total, dtype=torch.bool)
    for b, n in enumerate(lengths):
        sl = slice(0, n) if side == "right" else slice(total - n, total)
        x[b, sl] = seqs[b][0]
        mask[b, sl] = True
    y, final = m(x, mask=mask, return_state=True)
    assert (y[~mask] == 0).all()
    for b in range(2):
        ref, ref_state = m(seqs[b], return_state=True)
        _close(y[b][mask[b]], ref[0])
        _close(final.ssm[b], ref_state.ssm[0])
        _close(final.conv[b], ref_state.conv[0])


def test_resets_equal_running_episodes_separately() -> None:
    m = _model(ngroups=2)
    x = torch.randn(2, 12, D_MODEL)
    resets = torch.zeros(2, 12, dtype=torch.bool)
    resets[0, 5] = resets[1, 0] = True
    start = m.init_state(2)
    start = ConvSSMState(conv=torch.randn_like(start.conv), ssm=torch.randn_like(start.ssm))
    y, final = m(x, resets=resets, state=start, return_state=True)
    _close(y[0, :5], m(x[:1, :5], state=start.index(0))[0])
    ref, ref_state = m(x[:1, 5:], return_state=True)
    _close(y[0, 5:], ref[0])
    _close(final.ssm[0], ref_state.ssm[0])
    _close(y[1], m(x[1:])[0])
    state, outs = start, []
    for t in range(12):
        y_t, state = m.step(x[:, t], state, resets=resets[:, t])
        outs.append(y_t)
    _close(torch.stack(outs, 1), y)


def test_fp32_dt_under_autocast() -> None:
    m = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(2, 9, D_MODEL))
        dt = m._dt(torch.randn(2, 9, m.nheads, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert dt.dtype == torch.float32 and m.A_log.dtype == torch.float32


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(16, headdim=12)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(16, headdim=8, ngroups=3)
    m = _model()
    with pytest.raises(ValueError, match=r"\(B, L, D=16\)"):
        m(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="one token"):
        m.step(torch.randn(2, 3, D_MODEL), m.init_state(2))
    with pytest.raises(TypeError, match="ConvSSMState"):
        m.step(torch.randn(2, D_MODEL), (None, None))


def test_norms_match_their_formulas() -> None:
    x, z = torch.randn(3, 8), torch.randn(3, 8)
    rms = RMSNorm(8)
    rms.weight.data.uniform_(0.5, 2)
    expected = x / (x.square().mean(-1, keepdim=True) + 1e-5).sqrt() * rms.weight
    _close(rms(x), expected)
    assert rms(x.bfloat16()).dtype == torch.bfloat16

    gated = GatedRMSNorm(8, group_size=4)
    gated.weight.data.uniform_(0.5, 2)
    g = (x * F.silu(z)).view(3, 2, 4)
    expected = (g / (g.square().mean(-1, keepdim=True) + 1e-5).sqrt()).view(3, 8) * gated.weight
    _close(gated(x, z), expected)
    after = GatedRMSNorm(8, norm_before_gate=True)
    _close(after(x, z), RMSNorm(8)(x) * F.silu(z))
    _close(after(x), RMSNorm(8)(x))
    with pytest.raises(ValueError, match="group_size"):
        GatedRMSNorm(8, group_size=3)
    with pytest.raises(ValueError, match="gate z"):
        gated(x, z[:, :4])
