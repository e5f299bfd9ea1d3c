"""depthwise_causal_conv1d: the native C kernel and the reference against float64 F.conv1d."""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from ssmkit.kernels.depthwise_conv import depthwise_causal_conv1d

native = importlib.import_module("ssmkit.kernels.depthwise_conv.native")


def _truth(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, silu: bool, reverse: bool
) -> torch.Tensor:
    """Float64 spec written independently of the kernel: the reverse form by flips."""
    k, length = w.shape[-1], x.shape[-1]
    xs = x.flip(-1) if reverse else x
    y = F.conv1d(F.pad(xs, (k - 1, 0)), w, b, groups=x.shape[1])[..., :length]
    y = y.flip(-1) if reverse else y
    return F.silu(y) if silu else y


def _native_or_skip() -> None:
    if native.native_library() is None:
        pytest.skip("no C compiler (or SSMKIT_NATIVE=0): the native kernel is not built")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_native_matches_float64_truth(
    k: int,
    threads: int,
    num_threads: Callable[[int], None],
    native_calls: Callable[[object, str], list[int]],
) -> None:
    """Forward and all three gradients, every length (L < K included), both directions, with and
    without SiLU and bias, on 1 and 2 threads."""
    calls = native_calls(native, "NativeDepthwiseConv")
    num_threads(threads)
    for length, reverse, silu, has_bias in itertools.product(
        (1, 2, 3, 50, 257), (False, True), (False, True), (False, True)
    ):
        x64 = torch.randn(3, 6, length, dtype=torch.float64, requires_grad=True)
        w64 = torch.randn(6, 1, k, dtype=torch.float64, requires_grad=True)
        b64 = torch.randn(6, dtype=torch.float64, requires_grad=True) if has_bias else None
        want = _truth(x64, w64, b64, silu, reverse)
        dy = torch.randn_like(want)
        inputs64 = [t for t in (x64, w64, b64) if t is not None]
        grads64 = torch.autograd.grad(want, inputs64, dy)
        x, w = x64.detach().float(), w64.detach().float()
        b = None if b64 is None else b64.detach().float()
        inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
        got = depthwise_causal_conv1d(
            x, w, b, activation="silu" if silu else None, reverse=reverse, backend="cpu"
        )
        assert got.dtype == torch.float32 and got.shape == x.shape
        grads = torch.autograd.grad(got, inputs, dy.float())
        case = f"K={k} L={length} reverse={reverse} silu={silu} bias={has_bias}"
        torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5, msg=case)
        for name, g, g64 in zip(("x", "weight", "bias"), grads, grads64):
            scale = 1e-5 * (1 + g64.abs().max().item())
            torch.testing.assert_close(
                g.double(), g64, atol=scale * 10, rtol=1e-4, msg=f"d{name} {case}"
            )
    assert len(calls) == 5 * 2 * 2 * 2  # every case ran the native kernel


def test_non_contiguous_input_and_gradient() -> None:
    _native_or_skip()
    base = torch.randn(2, 40, 8)  # (B, L, C) -> a (B, C, L) view
    x = base.transpose(1, 2).requires_grad_()
    w = torch.randn(8, 1, 4, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    got = depthwise_causal_conv1d(x, w, b, activation="silu", backend="cpu")
    want = depthwise_causal_conv1d(x, w, b, activation="silu", backend="ref")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    dy = torch.randn(2, 40, 8).transpose(1, 2)  # a strided upstream gradient
    g_got = torch.autograd.grad(got, (x, w, b), dy)
    g_want = torch.autograd.grad(want, (x, w, b), dy)
    for a, c in zip(g_got, g_want):
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)


def test_input_not_modified() -> None:
    _native_or_skip()
    x = torch.randn(2, 3, 9)
    keep = x.clone()
    depthwise_causal_conv1d(x, torch.randn(3, 1, 4), torch.randn(3), activation="silu")
    assert torch.equal(x, keep)


def test_reference_float64_and_fallback() -> None:
    """float64 runs the reference on any backend (no error) and matches the spec exactly."""
    x = torch.randn(2, 4, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 1, 3, dtype=torch.float64, requires_grad=True)
    for reverse in (False, True):
        for backend in ("ref", "cpu", "auto"):
            got = depthwise_causal_conv1d(
                x, w, None, activation="silu", reverse=reverse, backend=backend
            )
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, _truth(x, w, None, True, reverse))
    assert torch.autograd.gradcheck(
        lambda a, b: depthwise_causal_conv1d(a, b, None, activation="silu", backend="ref"),
        (x[:1, :2, :5].detach().requires_grad_(), w[:2].detach().requires_grad_()),
    )


def test_bfloat16_falls_back_to_reference() -> None:
    x = torch.randn(2, 4, 7, dtype=torch.bfloat16)
    w = torch.randn(4, 1, 4, dtype=torch.bfloat16)
    got = depthwise_causal_conv1d(x, w, None, activation="silu", backend="cpu")
    assert got.dtype == torch.bfloat16
    want = depthwise_causal_conv1d(x, w, None, activation="silu", backend="ref")
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, activation, match",
    [
        ((2, 4), (4, 1, 4), None, None, "x must be"),
        ((2, 4, 0), (4, 1, 4), None, None, "L >= 1"),
        ((2, 4, 8), (5, 1, 4), None, None, "weight must be"),
        ((2, 4, 8), (4, 4), None, None, "weight must be"),
        ((2, 4, 8), (4, 2, 4), None, None, "weight must be"),
        ((2, 4, 8), (4, 1, 0), None, None, "K >= 1"),
        ((2, 4, 8), (4, 1, 4), (5,), None, "bias must be"),
        ((2, 4, 8), (4, 1, 4), None, "gelu", "activation must be"),
    ],
)
def test_bad_inputs_raise(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    b_shape: tuple[int, ...] | None,
    activation: str | None,
    match: str,
) -> None:
    b = None if b_shape is None else torch.randn(b_shape)
    with pytest.raises(ValueError, match=match):
        depthwise_causal_conv1d(
            torch.randn(x_shape), torch.randn(w_shape), b, activation=activation
        )


def test_bad_types_raise() -> None:
    with pytest.raises(TypeError, match="x"):
        depthwise_causal_conv1d(torch.ones(2, 4, 8, dtype=torch.long), torch.randn(4, 1, 4))
    with pytest.raises(TypeError, match="weight"):
        depthwise_causal_conv1d(torch.randn(2, 4, 8), [[0.0]] * 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backend"):
        depthwise_causal_conv1d(torch.randn(2, 4, 8), torch.randn(4, 1, 4), backend="gpu")


@pytest.mark.parametrize("shape", [(2, 80, 300), (1, 3, 17000)])
@pytest.mark.parametrize("reverse", [False, True])
def test_spans_larger_than_the_scratch(shape: tuple[int, int, int], reverse: bool) -> None:
    """The backward's SiLU scratch holds ~16K values: more channels x length than that (or one
    row longer than that) is processed in chunks."""
    _native_or_skip()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[1], 1, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    want = _truth(x, w, b, True, reverse)
    dy = torch.randn_like(want)
    g64 = torch.autograd.grad(want, (x, w, b), dy)
    xf, wf, bf = (t.detach().float().requires_grad_() for t in (x, w, b))
    got = depthwise_causal_conv1d(xf, wf, bf, activation="silu", reverse=reverse, backend="cpu")
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)
    for g, g_ref in zip(torch.autograd.grad(got, (xf, wf, bf), dy.float()), g64):
        atol = 1e-5 * (1 + g_ref.abs().max().item()) * 10
        torch.testing.assert_close(g.double(), g_ref, atol=atol, rtol=1e-4)


def test_build_without_openmp_splits_over_python_threads(
    native_without_openmp: Callable[..., object],
) -> None:
    """Without OpenMP the rows / channels are split over Python threads: same results."""
    x = torch.randn(3, 7, 30, requires_grad=True)
    w = torch.randn(7, 1, 4, requires_grad=True)
    b = torch.randn(7, requires_grad=True)
    dy = torch.randn(3, 7, 30)
    want = depthwise_causal_conv1d(x, w, b, activation="silu", backend="ref")
    g_want = torch.autograd.grad(want, (x, w, b), dy)
    native_without_openmp(native, "dc_openmp")
    got = depthwise_causal_conv1d(x, w, b, activation="silu", backend="cpu")
    g_got = torch.autograd.grad(got, (x, w, b), dy)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, c in zip(g_got, g_want):
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
