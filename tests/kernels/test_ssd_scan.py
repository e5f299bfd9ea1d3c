"""ssd_scan: reference vs the per-step recurrence and per-sequence loops; backends vs reference."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from ssmkit.kernels import ssd_scan

FAST_BACKENDS = ["cpu"]
if importlib.util.find_spec("triton") is not None:
    FAST_BACKENDS.append(pytest.param("triton", marks=pytest.mark.triton))

NAMES = ("y", "final", "dx", "ddt", "dA", "dB", "dC", "dD", "dz", "ddt_bias", "dh0")


def recurrence(x, dt, A, B, C, D=None, z=None, h0=None, seq_idx=None):
    """h = exp(dt A) h + dt x ⊗ B; y = h C + D x (times silu(z)), one step at a time, in float64."""
    x, dt, A, B, C = (t.double() for t in (x, dt, A, B, C))
    bsz, length, nheads, _ = x.shape
    rep = nheads // B.shape[2]
    B, C = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)
    h = torch.zeros(bsz, nheads, x.shape[3], B.shape[3], dtype=torch.float64)
    if h0 is not None:
        h = h0.double().clone()
    ys = []
    for t in range(length):
        if seq_idx is not None and t > 0:
            h = h * (seq_idx[:, t] == seq_idx[:, t - 1]).double().view(-1, 1, 1, 1)
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C[:, t]))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + x * (D.double()[:, None] if D.dim() == 1 else D.double())
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def make(length, bsz=2, heads=4, headdim=3, groups=2, dstate=5, decay="mid", d_hdim=False):
    g = torch.Generator().manual_seed(length)
    scale = {"tiny": 0.01, "mid": 1.0, "large": 30.0}[decay]
    x = torch.randn(bsz, length, heads, headdim, generator=g)
    dt = torch.randn(bsz, length, heads, generator=g) - 1.0
    A = -scale * (0.5 + torch.rand(heads, generator=g))
    B = torch.randn(bsz, length, groups, dstate, generator=g)
    C = torch.randn(bsz, length, groups, dstate, generator=g)
    D = torch.randn(heads, headdim, generator=g) if d_hdim else torch.randn(heads, generator=g)
    z = torch.randn(bsz, length, heads, headdim, generator=g)
    dt_bias = torch.randn(heads, generator=g) * 0.5
    h0 = torch.randn(bsz, heads, headdim, dstate, generator=g)
    return [x, dt, A, B, C, D, z, dt_bias, h0]


def run(backend, tensors, chunk, seq_idx=None, cu_seqlens=None, dtype=torch.float32):
    leaves = [t.detach().clone().to(dtype).requires_grad_(True) for t in tensors]
    x, dt, A, B, C, D, z, dt_bias, h0 = leaves + [None] * (9 - len(leaves))
    y, final = ssd_scan(
        x, dt, A, B, C, chunk, D, z, dt_bias, h0, seq_idx, cu_seqlens,
        dt_softplus=True, return_final_states=True, backend=backend,
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    loss = (y.float() * torch.randn(y.shape, generator=g)).sum()
    loss = loss + (final * torch.randn(final.shape, generator=g)).sum()
    loss.backward()
    return [y, final] + [t.grad for t in leaves]


@pytest.mark.parametrize("d_hdim", [False, True])
@pytest.mark.parametrize("length", [1, 2, 63])
def test_reference_equals_recurrence(length, d_hdim):
    x, dt, A, B, C, D, z, dt_bias, h0 = make(length, d_hdim=d_hdim)
    y, final = ssd_scan(x, dt, A, B, C, 16, D, z, dt_bias, h0, dt_softplus=True,
                        return_final_states=True, backend="ref")  # fmt: skip
    y_ref, final_ref = recurrence(x, F.softplus(dt + dt_bias), A, B, C, D, z, h0)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(final.double(), final_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("decay", ["tiny", "mid", "large"])
@pytest.mark.parametrize("length", [1, 2, 63, 1000])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference(backend, length, decay, assert_close):
    if backend == "triton" and (length > 63 or decay != "mid"):
        pytest.skip("the Triton interpreter is slow: long and extreme-decay cases run on ref/cpu")
    small = backend == "triton" or length == 1000  # the interpreter runs programs one by one
    tensors = make(length, decay=decay, bsz=1 if small else 2, heads=2 if small else 4)
    ref = run("ref", tensors, 32)
    fast = run(backend, tensors, 32)
    for name, r, f in zip(NAMES, ref, fast):
        assert_close(name, r, f)


@pytest.mark.parametrize("backend", ["ref", *FAST_BACKENDS])
def test_seq_idx_equals_per_sequence_loops(backend):
    x, dt, A, B, C, D, z, dt_bias, h0 = make(37)
    # segments shorter than a chunk, one spanning chunks, a boundary exactly on a chunk edge
    seq_idx = torch.tensor([[0] * 3 + [1] * 5 + [2] * 29, [4] * 16 + [5] * 1 + [7] * 20])
    y, final = ssd_scan(x, dt, A, B, C, 8, D, z, dt_bias, h0, seq_idx, dt_softplus=True,
                        return_final_states=True, backend=backend)  # fmt: skip
    y_ref, final_ref = recurrence(x, F.softplus(dt + dt_bias), A, B, C, D, z, h0, seq_idx)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(final.double(), final_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["ref", *FAST_BACKENDS])
def test_cu_seqlens_equals_per_sequence_loops(backend, assert_close):
    x, dt, A, B, C, D, z, dt_bias, _ = make(30, bsz=1)
    cu = torch.tensor([0, 3, 4, 21, 30])
    tensors = [x, dt, A, B, C, D, z, dt_bias]
    got = run(backend, tensors, 8, cu_seqlens=cu)
    assert got[1].shape == (4, 4, 3, 5)
    for k in range(4):
        s, e = int(cu[k]), int(cu[k + 1])
        y_ref, final_ref = recurrence(
            x[:, s:e], F.softplus(dt[:, s:e] + dt_bias), A, B[:, s:e], C[:, s:e], D, z[:, s:e]
        )
        torch.testing.assert_close(got[0][:, s:e].double(), y_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[1][k].double(), final_ref[0], rtol=1e-4, atol=1e-4)
    if backend != "ref":
        ref = run("ref", tensors, 8, cu_seqlens=cu)
        for name, r, f in zip(NAMES, ref, got):
            assert_close(name, r, f)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_seq_idx_gradients_match_reference(backend, assert_close):
    tensors = make(20, heads=2, headdim=2, dstate=3)
    seq_idx = torch.tensor([[0] * 5 + [1] * 15, [0] * 19 + [1]])
    ref = run("ref", tensors, 8, seq_idx=seq_idx)
    fast = run(backend, tensors, 8, seq_idx=seq_idx)
    for name, r, f in zip(NAMES, ref, fast):
        assert_close(name, r, f)


def test_dt_limit_and_chunk_size_do_not_change_the_math():
    x, dt, A, B, C, D, z, dt_bias, h0 = make(50)
    kw = dict(D=D, dt_bias=dt_bias, initial_states=h0, dt_softplus=True, dt_limit=(0.1, 0.5))
    y8 = ssd_scan(x, dt, A, B, C, 8, backend="ref", **kw)
    y64 = ssd_scan(x, dt, A, B, C, 64, backend="ref", **kw)
    torch.testing.assert_close(y8, y64, rtol=1e-4, atol=1e-4)
    y_ref, _ = recurrence(x, F.softplus(dt + dt_bias).clamp(0.1, 0.5), A, B, C, D, None, h0)
    torch.testing.assert_close(y8.double(), y_ref, rtol=1e-4, atol=1e-4)


def test_long_chunk_large_decay_is_finite():
    """Stable segsum: a 256-long chunk with dt*A ~ -50 per step must not produce NaN/inf."""
    x, dt, A, B, C, *_ = make(256, bsz=1, decay="large")
    tensors = [x, dt.abs() + 1.0, A, B, C]
    for backend in ("ref", "cpu"):
        out = run(backend, tensors, 256)
        assert all(torch.isfinite(t).all() for t in out)


@pytest.mark.parametrize("backend", ["ref", *FAST_BACKENDS])
def test_bf16_inputs(backend, assert_close):
    tensors = make(40 if backend != "triton" else 12)
    y = run(backend, tensors, 16, dtype=torch.bfloat16)[0]
    assert y.dtype == torch.bfloat16
    exact = run("ref", [t.to(torch.bfloat16).float() for t in tensors], 16)[0]
    assert_close("y", exact, y.float(), ratio=2e-2)


def test_gradcheck_reference_float64():
    x, dt, A, B, C, D, z, dt_bias, h0 = make(7, bsz=1, heads=2, headdim=2, groups=1, dstate=2)
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    args = [t.double().requires_grad_(True) for t in (x, dt, A, B, C, D, z, dt_bias, h0)]

    def fn(x, dt, A, B, C, D, z, dt_bias, h0):
        return ssd_scan(x, dt, A, B, C, 3, D, z, dt_bias, h0, seq_idx, dt_softplus=True,
                        return_final_states=True, backend="ref")  # fmt: skip

    assert torch.autograd.gradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_nan_poison(backend, nan_poison, assert_close):
    tensors = make(37 if backend != "triton" else 19, bsz=1)
    ref = run("ref", tensors, 16)
    fast = run(backend, tensors, 16)
    for name, r, f in zip(NAMES, ref, fast):
        assert_close(name, r, f)


def test_bad_inputs():
    x, dt, A, B, C, *_ = make(10)
    with pytest.raises(ValueError, match=r"`dt` must have shape \(2, 10, 4\)"):
        ssd_scan(x, dt[:, :9], A, B, C)
    with pytest.raises(ValueError, match="multiple of the B/C groups"):
        ssd_scan(x, dt, A, B[:, :, :1].expand(2, 10, 3, 5), C[:, :, :1].expand(2, 10, 3, 5))
    with pytest.raises(TypeError, match="`x` must be a real floating point"):
        ssd_scan(x.long(), dt, A, B, C)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int"):
        ssd_scan(x, dt, A, B, C, chunk_size=0)
    with pytest.raises(ValueError, match="`D` must have shape"):
        ssd_scan(x, dt, A, B, C, D=torch.ones(3))
    with pytest.raises(ValueError, match="b == 1"):
        ssd_scan(x, dt, A, B, C, cu_seqlens=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="end at l = 10"):
        ssd_scan(x[:1], dt[:1], A, B[:1], C[:1], cu_seqlens=torch.tensor([0, 4, 9]))
    with pytest.raises(TypeError, match="`seq_idx` must be an integer"):
        ssd_scan(x, dt, A, B, C, seq_idx=torch.zeros(2, 10))
    with pytest.raises(ValueError, match="not both"):
        ssd_scan(x[:1], dt[:1], A, B[:1], C[:1], seq_idx=torch.zeros(1, 10, dtype=torch.long),
                 cu_seqlens=torch.tensor([0, 10]))  # fmt: skip


@pytest.mark.parametrize("backend", ["ref", "cpu"])
def test_non_contiguous_inputs(backend):
    x, dt, A, B, C, D, z, dt_bias, h0 = make(21)
    x_nc = x.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    B_nc = B.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    assert not x_nc.is_contiguous() and not B_nc.is_contiguous()
    kw = dict(D=D, z=z, dt_bias=dt_bias, initial_states=h0, dt_softplus=True, backend=backend)
    torch.testing.assert_close(
        ssd_scan(x_nc, dt, A, B_nc, C, 8, **kw), ssd_scan(x, dt, A, B, C, 8, **kw)
    )


def test_auto_dispatch_uses_the_cpu_backend_and_env_override(monkeypatch):
    # ``ssmkit.kernels.ssd_scan`` is the function (it shadows the subpackage attribute)
    cpu_module = importlib.import_module("ssmkit.kernels.ssd_scan.cpu")

    def boom(*args, **kwargs):
        raise RuntimeError("cpu backend called")

    monkeypatch.setattr(cpu_module, "ssd_scan_cpu", boom)
    x, dt, A, B, C, *_ = make(4)
    with pytest.raises(RuntimeError, match="cpu backend called"):
        ssd_scan(x, dt, A, B, C)
    monkeypatch.setenv("SSMKIT_BACKEND", "ref")
    assert ssd_scan(x, dt, A, B, C).shape == x.shape
