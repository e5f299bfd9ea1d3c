"""diag_scan: reference vs the plain loop, every backend vs the reference (outputs, all grads)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ssmkit.kernels import diag_scan

FAST_BACKENDS = ["cpu"]
if importlib.util.find_spec("triton") is not None:
    FAST_BACKENDS.append(pytest.param("triton", marks=pytest.mark.triton))


def loop(a, b, h0=None, resets=None, z=None, reverse=False):
    """h_t = a_t * ((1 - d_t) h_{t-1} + d_t z) + b_t, the definition, one step at a time."""
    a = a.expand(b.shape)
    steps = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0.expand_as(b[:, 0]).to(b.dtype)
    out = [None] * b.shape[1]
    for t in steps:
        if resets is not None:
            d = resets[:, t].to(b.real.dtype).view(-1, *([1] * (b.dim() - 2)))
            zt = torch.zeros_like(h) if z is None else z
            h = (1 - d) * h + d * zt
        h = a[:, t] * h + b[:, t]
        out[t] = h
    return torch.stack(out, dim=1)


def make(length, shape=(3, 4), dtype=torch.float32, complex_=False, decay="mid", seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = {"tiny": (1e-6, 1e-3), "mid": (0.05, 0.95), "large": (0.999, 0.99999)}[decay]
    a = lo + (hi - lo) * torch.rand(2, length, *shape, generator=g)
    b = torch.randn(2, length, *shape, generator=g)
    h0 = torch.randn(2, *shape, generator=g)
    z = torch.randn(*shape, generator=g)
    if complex_:
        a = a * torch.exp(1j * torch.rand(2, length, *shape, generator=g))
        b = torch.complex(b, torch.randn(2, length, *shape, generator=g))
        h0 = torch.complex(h0, torch.randn(2, *shape, generator=g))
        z = torch.complex(z, torch.randn(*shape, generator=g))
    resets = torch.rand(2, length, generator=g) < 0.1
    resets[0, 0] = True
    return [t.to(dtype) if not complex_ else t for t in (a, b, h0, z)] + [resets]


def as_real(t):
    """The shared assert_close's max-abs shortcut reads real parts only: compare (re, im) pairs."""
    return torch.view_as_real(t) if t.is_complex() else t


def run(backend, a, b, h0, z, resets, reverse, weights):
    leaves = [t.detach().clone().requires_grad_(True) for t in (a, b, h0, z)]
    h = diag_scan(leaves[0], leaves[1], leaves[2], resets, leaves[3], reverse, backend=backend)
    loss = (h * weights).real.sum() if h.is_complex() else (h.float() * weights).sum()
    loss.backward()
    return [as_real(t) for t in [h] + [t.grad for t in leaves]]


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 2, 63])
def test_reference_equals_loop(length, reverse, complex_):
    a, b, h0, z, resets = make(length, complex_=complex_)
    got = diag_scan(a, b, h0, resets, z, reverse, backend="ref")
    torch.testing.assert_close(got, loop(a, b, h0, resets, z, reverse))


@pytest.mark.parametrize("backend", ["ref", *FAST_BACKENDS])
def test_non_associative_learned_init_example(backend):
    """REFERENCES §1.7: R2I's operator gives 3.8 for one grouping; the sequential value is 2.0."""
    a = torch.tensor([0.5, 0.7, 0.9]).view(1, 3, 1)
    b = torch.tensor([1.0, 0.3, 0.2]).view(1, 3, 1)
    resets = torch.tensor([[False, False, True]])
    h = diag_scan(a, b, resets=resets, reset_value=torch.tensor([2.0]), backend=backend)
    assert abs(float(h[0, 2, 0]) - 2.0) < 1e-6
    assert abs(float(h[0, 1, 0]) - (0.7 * 1.0 + 0.3)) < 1e-6


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("backend", ["ref", *FAST_BACKENDS])
def test_resets_equal_separate_episodes(backend, learned):
    a, b, h0, z, _ = make(20)
    starts = [0, 7, 8, 15]  # reset at t=0, mid-sequence, back-to-back
    resets = torch.zeros(2, 20, dtype=torch.bool)
    resets[:, starts] = True
    zval = z if learned else None
    h = diag_scan(a, b, h0, resets, zval, backend=backend)
    bounds = [*starts, 20]
    for s, e in zip(bounds, bounds[1:]):
        start_state = z.expand(2, *z.shape) if learned else torch.zeros_like(h0)
        ep = diag_scan(a[:, s:e], b[:, s:e], start_state, backend="ref")
        torch.testing.assert_close(h[:, s:e], ep)


@pytest.mark.parametrize("decay", ["tiny", "mid", "large"])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 2, 63, 1000])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference(backend, length, reverse, complex_, decay, assert_close):
    if backend == "triton" and (
        length > 63 or decay != "mid" or (length == 63 and reverse != complex_)
    ):
        pytest.skip("the Triton interpreter is slow: long and extreme-decay cases run on ref/cpu")
    a, b, h0, z, resets = make(length, complex_=complex_, decay=decay)
    weights = torch.randn(b.shape, dtype=b.dtype)
    ref = run("ref", a, b, h0, z, resets, reverse, weights)
    fast = run(backend, a, b, h0, z, resets, reverse, weights)
    for name, r, f in zip(("h", "da", "db", "dh0", "dz"), ref, fast):
        assert_close(name, r, f)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_large_state_loop_path_and_broadcast_a(backend, assert_close):
    """Per-step states >= 512 elements take the CPU loop path; a broadcast over (H, W)."""
    shape = (4, 6, 24) if backend != "triton" else (2, 3, 8)
    a, b, h0, z, resets = make(17, shape=shape)
    a = a[:, :, :1, :1].contiguous()  # (B, L, 1, 1, P): one decay per state channel
    weights = torch.randn(b.shape)
    ref = run("ref", a, b, h0, z, resets, True, weights)
    fast = run(backend, a, b, h0, z, resets, True, weights)
    for name, r, f in zip(("h", "da", "db", "dh0", "dz"), ref, fast):
        assert_close(name, r, f)


@pytest.mark.parametrize("backend", ["ref", *FAST_BACKENDS])
def test_bf16_inputs(backend, assert_close):
    a, b, h0, z, resets = make(63, dtype=torch.bfloat16)
    h = diag_scan(a, b, h0, resets, z, backend=backend)
    assert h.dtype == torch.bfloat16
    exact = loop(a.float(), b.float(), h0.float(), resets, z.float())
    assert_close("h", exact, h.float(), ratio=1e-2)


def test_gradcheck_reference_float64():
    a, b, h0, z, resets = make(6, shape=(2,), dtype=torch.float64)
    args = [t.requires_grad_(True) for t in (a, b, h0, z)]
    fn = lambda a, b, h0, z: diag_scan(a, b, h0, resets, z, True, backend="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)


def test_gradcheck_cpu_complex128():
    a, b, h0, z, resets = make(5, shape=(2,), complex_=True)
    args = [t.to(torch.complex128).requires_grad_(True) for t in (a, b, h0, z)]
    fn = lambda a, b, h0, z: diag_scan(a, b, h0, resets, z, backend="cpu")  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_nan_poison(backend, nan_poison, assert_close):
    shapes = ((3, 4), (3, 200)) if backend == "cpu" else ((3, 4),)  # both CPU paths
    for shape in shapes:
        a, b, h0, z, resets = make(40 if backend == "cpu" else 9, shape=shape)
        weights = torch.randn(b.shape)
        ref = run("ref", a, b, h0, z, resets, False, weights)
        fast = run(backend, a, b, h0, z, resets, False, weights)
        for name, r, f in zip(("h", "da", "db", "dh0", "dz"), ref, fast):
            assert_close(name, r, f)


def test_bad_inputs():
    a, b = torch.rand(2, 5, 3), torch.randn(2, 5, 3)
    with pytest.raises(TypeError, match="`b` must be a floating point"):
        diag_scan(a, torch.ones(2, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="`a` has shape"):
        diag_scan(torch.rand(2, 4, 3), b)
    with pytest.raises(ValueError, match="`initial_state` has shape"):
        diag_scan(a, b, torch.zeros(3, 3))
    with pytest.raises(TypeError, match="`resets` must be a bool"):
        diag_scan(a, b, resets=torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"`resets` must have shape \(B, L\)"):
        diag_scan(a, b, resets=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="without `resets`"):
        diag_scan(a, b, reset_value=torch.zeros(3))
    with pytest.raises(ValueError, match="unknown backend"):
        diag_scan(a, b, backend="cuda")
    with pytest.raises(ValueError, match="at least 2 dims"):
        diag_scan(torch.rand(5), torch.rand(5))


@pytest.mark.parametrize("backend", ["ref", "cpu"])
def test_non_contiguous_inputs(backend):
    a, b, h0, z, resets = make(30, shape=(5, 3))
    a_nc = a.transpose(1, 2).contiguous().transpose(1, 2)
    b_nc = b.transpose(0, 1).contiguous().transpose(0, 1)
    assert not a_nc.is_contiguous() and not b_nc.is_contiguous()
    got = diag_scan(a_nc, b_nc, h0, resets, z, backend=backend)
    torch.testing.assert_close(got, diag_scan(a, b, h0, resets, z, backend=backend))
