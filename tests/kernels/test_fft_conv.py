"""fft_conv: against the direct convolution sum (causal and bidirectional), grads, dtypes, errors."""

from __future__ import annotations

import pytest
import torch

from ssmkit.kernels import fft_conv


def direct(u, k, bidirectional=False):
    """y[t] = Σ_j k0[j] u[t-j] (+ Σ_{m>=1} k1[m-1] u[t+m]) by explicit sums, in float64."""
    u, k = u.double(), k.double()
    length = u.shape[-1]
    k0, k1 = (k[0], k[1]) if bidirectional else (k, None)
    y = torch.zeros_like(u)
    for t in range(length):
        for j in range(k0.shape[-1]):
            if t - j >= 0:
                y[..., t] += k0[:, j] * u[..., t - j]
            if k1 is not None and t + j + 1 < length:
                y[..., t] += k1[:, j] * u[..., t + j + 1]
    return y


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(("length", "klen"), [(1, 1), (2, 2), (63, 63), (63, 5), (100, 37)])
def test_matches_direct_convolution(length, klen, bidirectional, backend):
    u = torch.randn(2, 3, length)
    k = torch.randn(*((2,) if bidirectional else ()), 3, klen)
    y = fft_conv(u, k, bidirectional, backend=backend)
    torch.testing.assert_close(y.double(), direct(u, k, bidirectional), rtol=1e-4, atol=1e-4)


def test_no_circular_wraparound():
    """An impulse at the last step must not leak into the first outputs (n = 2L, not L)."""
    u = torch.zeros(1, 1, 16)
    u[..., -1] = 1.0
    y = fft_conv(u, torch.ones(1, 16))
    assert float(y[..., :-1].abs().max()) < 1e-6
    assert abs(float(y[..., -1]) - 1.0) < 1e-6


def test_gradcheck_float64():
    u = torch.randn(1, 2, 9, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, k: fft_conv(u, k, True), (u, k), fast_mode=True)


def test_bf16_input_keeps_dtype(assert_close):
    u, k = torch.randn(2, 3, 50), torch.randn(3, 50)
    y = fft_conv(u.bfloat16(), k)
    assert y.dtype == torch.bfloat16
    assert_close("y", direct(u.bfloat16().float(), k), y.float(), ratio=1e-2)


def test_bad_inputs():
    u = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match=r"`u` must have shape \(B, H, L\)"):
        fft_conv(u[0], torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"`k` must have shape \(H, Lk\) with H = 3"):
        fft_conv(u, torch.randn(4, 10))
    with pytest.raises(ValueError, match=r"\(2, H, Lk\)"):
        fft_conv(u, torch.randn(3, 10), bidirectional=True)
    with pytest.raises(ValueError, match="kernel length Lk = 11"):
        fft_conv(u, torch.randn(3, 11))
    with pytest.raises(TypeError, match="real floating point"):
        fft_conv(u, torch.randn(3, 10, dtype=torch.complex64))
