"""RMSNorm / GatedRMSNorm / SequenceBackbone: the native CPU RMSNorm kernel vs the torch formula."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch

from ssmkit.core import GatedRMSNorm, RMSNorm, SequenceBackbone

native = importlib.import_module("ssmkit.kernels.rms_norm.native")


def _fixed(*tensors: torch.Tensor) -> Callable[[], tuple[torch.Tensor, ...]]:
    """The same inputs for both runs."""
    return lambda: tensors


def _run(
    model: torch.nn.Module, inputs: Callable[[], tuple[torch.Tensor, ...]]
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    args = [t.clone().requires_grad_() for t in inputs()]
    y = model(*args)
    y.backward(torch.ones_like(y) * torch.linspace(-1, 1, y.shape[-1]))
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return y.detach(), grads, [a.grad for a in args]


def _native_vs_reference(
    monkeypatch: pytest.MonkeyPatch,
    native_calls: Callable[[object, str], list[int]],
    model: torch.nn.Module,
    inputs: Callable[[], tuple[torch.Tensor, ...]],
    expected_calls: int,
) -> None:
    calls = native_calls(native, "NativeRMSNorm")
    fast = _run(model, inputs)
    assert len(calls) == expected_calls  # the native kernel ran for every norm
    monkeypatch.setattr(native, "native_library", lambda: None)  # -> the torch formula
    ref = _run(model, inputs)
    assert len(calls) == expected_calls
    for a, b in zip([fast[0], *fast[1], *fast[2]], [ref[0], *ref[1], *ref[2]]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def test_rms_norm_module(
    monkeypatch: pytest.MonkeyPatch, native_calls: Callable[[object, str], list[int]]
) -> None:
    torch.manual_seed(0)
    norm = RMSNorm(24)
    with torch.no_grad():
        norm.weight.normal_()
    _native_vs_reference(monkeypatch, native_calls, norm, _fixed(torch.randn(3, 5, 24)), 1)


def test_gated_rms_norm(
    monkeypatch: pytest.MonkeyPatch, native_calls: Callable[[object, str], list[int]]
) -> None:
    torch.manual_seed(0)
    norm = GatedRMSNorm(24, group_size=8)
    with torch.no_grad():
        norm.weight.normal_()
    _native_vs_reference(
        monkeypatch, native_calls, norm, _fixed(torch.randn(2, 5, 24), torch.randn(2, 5, 24)), 1
    )


def test_sequence_backbone(
    monkeypatch: pytest.MonkeyPatch, native_calls: Callable[[object, str], list[int]]
) -> None:
    """Output, input gradient and every parameter gradient agree (2 block norms + norm_f)."""
    torch.manual_seed(0)
    model = SequenceBackbone(16, 2, mixer_kwargs={"d_state": 4})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_()
    _native_vs_reference(monkeypatch, native_calls, model, _fixed(torch.randn(2, 12, 16)), 3)


def test_rms_norm_keeps_dtype_behaviour() -> None:
    """bf16 module / input and autocast: output dtype as before (the reference runs)."""
    norm = RMSNorm(8)
    x = torch.randn(2, 8)
    assert norm(x).dtype == torch.float32
    assert norm(x.bfloat16()).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert norm(x).dtype == torch.float32
