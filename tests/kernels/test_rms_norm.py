"""rms_norm: the native C kernel and the reference against a float64 formula."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch

from ssmkit.kernels.rms_norm import rms_norm

native = importlib.import_module("ssmkit.kernels.rms_norm.native")


def _truth(x: torch.Tensor, w: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Float64 spec written independently of the kernel: divide by the root mean square."""
    y = x / (x.pow(2).sum(-1, keepdim=True) / x.shape[-1] + eps).sqrt()
    return y if w is None else y * w


def _native_or_skip() -> None:
    if native.native_library() is None:
        pytest.skip("no C compiler (or SSMKIT_NATIVE=0): the native kernel is not built")


def _check(x64: torch.Tensor, w64: torch.Tensor | None, x: torch.Tensor, case: str) -> None:
    """Native forward and gradients on fp32 ``x`` (a view of x64's values) vs the float64 truth."""
    x64 = x64.detach().requires_grad_()
    w64 = None if w64 is None else w64.detach().requires_grad_()
    want = _truth(x64, w64, 1e-5)
    dy = torch.randn_like(want)
    inputs64 = [t for t in (x64, w64) if t is not None]
    grads64 = torch.autograd.grad(want, inputs64, dy)
    x = x.detach().requires_grad_()
    w = None if w64 is None else w64.detach().float().requires_grad_()
    keep = x.detach().clone()
    got = rms_norm(x, w, 1e-5, backend="cpu")
    assert got.dtype == torch.float32 and got.shape == x.shape, case
    grads = torch.autograd.grad(got, [t for t in (x, w) if t is not None], dy.float())
    assert torch.equal(x.detach(), keep), f"input modified: {case}"
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5, msg=case)
    for name, g, g64 in zip(("x", "weight"), grads, grads64):
        atol = 1e-5 * (1 + g64.abs().max().item())
        torch.testing.assert_close(g.double(), g64, atol=atol, rtol=1e-4, msg=f"d{name} {case}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("d", [1, 3, 16, 64, 100])
def test_native_matches_float64_truth(
    d: int,
    threads: int,
    num_threads: Callable[[int], None],
    native_calls: Callable[[object, str], list[int]],
) -> None:
    """Forward and gradients for (7, D) and (2, 5, D), with and without weight, 1 and 2 threads;
    every case runs the native kernel."""
    calls = native_calls(native, "NativeRMSNorm")
    num_threads(threads)
    for lead in ((7,), (2, 5)):
        for has_w in (False, True):
            x64 = torch.randn(*lead, d, dtype=torch.float64) * 3
            w64 = torch.randn(d, dtype=torch.float64) if has_w else None
            _check(x64, w64, x64.float(), f"shape={(*lead, d)} weight={has_w}")
    assert len(calls) == 4


def test_non_contiguous_input() -> None:
    """A transposed view (..., D) with stride(-1) != 1, and a strided upstream gradient."""
    _native_or_skip()
    base = torch.randn(2, 24, 9, dtype=torch.float64)  # (B, D, L) -> a (B, L, D) view
    x64 = base.transpose(1, 2)
    _check(x64, torch.randn(24, dtype=torch.float64), base.float().transpose(1, 2), "transposed")
    x = base.float().transpose(1, 2).requires_grad_()
    w = torch.randn(24, requires_grad=True)
    dy = torch.randn(2, 24, 9).transpose(1, 2)
    got = rms_norm(x, w, backend="cpu")
    want = rms_norm(x, w, backend="ref")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(got, (x, w), dy), torch.autograd.grad(want, (x, w), dy)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_empty_and_one_row() -> None:
    _native_or_skip()
    x = torch.randn(0, 8, requires_grad=True)
    w = torch.randn(8, requires_grad=True)
    y = rms_norm(x, w, backend="cpu")
    assert y.shape == (0, 8)
    dx, dw = torch.autograd.grad(y.sum(), (x, w))
    assert dx.shape == (0, 8) and torch.equal(dw, torch.zeros(8))
    x64 = torch.randn(1, 5, dtype=torch.float64)
    _check(x64, torch.randn(5, dtype=torch.float64), x64.float(), "one row")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_other_dtypes_fall_back_to_reference(dtype: torch.dtype) -> None:
    """bf16 / fp64 run the reference on any backend (no error): fp32 out, equal to the formula."""
    x = torch.randn(3, 4, 16, dtype=dtype)
    w = torch.randn(16, dtype=dtype)
    for backend in ("ref", "cpu", "auto"):
        got = rms_norm(x, w, backend=backend)
        assert got.dtype == torch.float32
        assert torch.equal(got, rms_norm(x, w, backend="ref"))
    xf = x.float()
    want = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + 1e-5) * w.float()
    assert torch.equal(rms_norm(x, w), want)


def test_autocast_and_disabled_native_run_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = native.NativeRMSNorm.apply
    monkeypatch.setattr(native.NativeRMSNorm, "apply", lambda *a: calls.append(1) or real(*a))
    x, w = torch.randn(4, 8), torch.randn(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rms_norm(x, w, backend="cpu")
    assert not calls and torch.equal(got, rms_norm(x, w, backend="ref"))
    monkeypatch.setattr(native, "native_library", lambda: None)
    assert torch.equal(rms_norm(x, w, backend="cpu"), rms_norm(x, w, backend="ref"))
    assert not calls


@pytest.mark.parametrize(
    "x_shape, w_shape, eps, match",
    [
        ((), None, 1e-5, "x must be"),
        ((4, 0), None, 1e-5, "D >= 1"),
        ((4, 8), (7,), 1e-5, "weight must be"),
        ((4, 8), (8, 1), 1e-5, "weight must be"),
        ((4, 8), None, -1.0, "eps must be"),
    ],
)
def test_bad_inputs_raise(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...] | None, eps: float, match: str
) -> None:
    w = None if w_shape is None else torch.randn(w_shape)
    with pytest.raises(ValueError, match=match):
        rms_norm(torch.randn(x_shape), w, eps)


def test_bad_types_raise() -> None:
    with pytest.raises(TypeError, match="x"):
        rms_norm(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="weight"):
        rms_norm(torch.randn(2, 4), [1.0] * 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backend"):
        rms_norm(torch.randn(2, 4), backend="gpu")


def test_build_without_openmp_splits_over_python_threads(
    native_without_openmp: Callable[..., object],
) -> None:
    """Without OpenMP the rows are split over Python threads (one dw part each): same results."""
    x = torch.randn(3, 11, 33, requires_grad=True)
    w = torch.randn(33, requires_grad=True)
    dy = torch.randn(3, 11, 33)
    want = rms_norm(x, w, backend="ref")
    g_want = torch.autograd.grad(want, (x, w), dy)
    native_without_openmp(native, "rn_openmp")
    got = rms_norm(x, w, backend="cpu")
    g_got = torch.autograd.grad(got, (x, w), dy)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for a, c in zip(g_got, g_want):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)
