"""The mixers' training conv + SiLU (``core.mamba.conv_silu``) through the native CPU kernel give
the same outputs and gradients as the F.conv1d reference, and the old unfused expression."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import ops
from ssmkit.core.bimamba import BiMamba
from ssmkit.core.mamba import Mamba, anticausal_conv1d, causal_conv1d, conv_prefix, conv_silu
from ssmkit.core.mamba2 import Mamba2
from ssmkit.core.tri_mamba import TriOrientedMamba

native = importlib.import_module("ssmkit.kernels.depthwise_conv.native")


def _run(model: nn.Module, x: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, ...]:
    model.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_()
    y = model(xg, **kwargs)
    y.square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return (y.detach(), xg.grad, *grads)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], dict]] = {
    "mamba": (lambda: Mamba(16, d_state=4), lambda: torch.randn(2, 13, 16), {}),
    "mamba-reverse": (
        lambda: Mamba(16, d_state=4),
        lambda: torch.randn(2, 13, 16),
        {"reverse": True},
    ),
    "mamba-L2": (lambda: Mamba(16, d_state=4), lambda: torch.randn(2, 2, 16), {}),
    "bimamba-v2": (lambda: BiMamba(16, d_state=4), lambda: torch.randn(2, 13, 16), {}),
    "bimamba-v1": (lambda: BiMamba(16, variant="v1", d_state=4), lambda: torch.randn(2, 9, 16), {}),
    "mamba2": (
        lambda: Mamba2(16, d_state=8, headdim=8, chunk_size=8),
        lambda: torch.randn(2, 12, 16),
        {},
    ),
    "tri_mamba": (lambda: TriOrientedMamba(8, d_state=4), lambda: torch.randn(1, 8, 2, 3, 4), {}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_native_conv_matches_reference_in_mixers(
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    native_calls: Callable[[object, str], list[int]],
) -> None:
    calls = native_calls(native, "NativeDepthwiseConv")
    build, make_x, kwargs = MODELS[name]
    torch.manual_seed(0)
    model, x = build(), make_x()
    fast = _run(model, x, **kwargs)
    assert calls, "the training forward did not run the native conv"
    monkeypatch.setattr(
        ops,
        "depthwise_causal_conv1d",
        functools.partial(ops.depthwise_causal_conv1d, backend="ref"),
    )
    count = len(calls)
    ref = _run(model, x, **kwargs)
    assert len(calls) == count  # the reference run did not touch the kernel
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_masked_path_unchanged(native_calls: Callable[[object, str], list[int]]) -> None:
    """With a mask (or state / resets) the mixers keep the general causal_conv1d path."""
    calls = native_calls(native, "NativeDepthwiseConv")
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    Mamba(16, d_state=4)(torch.randn(2, 10, 16), mask=mask)
    assert calls == []


@pytest.mark.parametrize("length", [1, 2, 3, 20])
@pytest.mark.parametrize("reverse", [False, True])
def test_conv_silu_equals_old_expression(length: int, reverse: bool) -> None:
    x = torch.randn(2, 5, length)
    w, b = torch.randn(5, 1, 4), torch.randn(5)
    old = F.silu(anticausal_conv1d(x, w, b) if reverse else causal_conv1d(x, w, b)[0])
    torch.testing.assert_close(conv_silu(x, w, b, reverse=reverse), old, atol=1e-6, rtol=1e-5)
    if not reverse:
        assert torch.equal(conv_prefix(x, 4), causal_conv1d(x, w, b)[1])
