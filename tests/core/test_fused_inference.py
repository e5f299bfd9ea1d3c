"""Mamba / BiMamba inference through the fused CPU kernels equals the autograd path, and the fused
path is taken exactly when it may be (no grad, CPU fp32, no mask/resets/state, cpu backend)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch

from ssmkit.core import BiMamba, Mamba

mamba_module = importlib.import_module("ssmkit.core.mamba")
fused = importlib.import_module("ssmkit.kernels.selective_scan.fused")

pytestmark = pytest.mark.skipif(
    fused.fused_library() is None,
    reason="no C compiler: the fused kernels cannot be built (the unfused path runs)",
)


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records each fused-kernel call (its ``reverse`` flag)."""
    calls: list[bool] = []
    real = mamba_module.mamba_inner_inference

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(bool(kwargs.get("reverse", False)))
        return real(*args, **kwargs)

    monkeypatch.setattr(mamba_module, "mamba_inner_inference", spy)
    return calls


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module


MIXERS = [
    pytest.param(lambda: Mamba(24, d_state=5), 1, id="mamba"),
    *[
        pytest.param(
            lambda v=v, m=m: BiMamba(24, variant=v, merge=m, d_state=16), 2, id=f"bimamba-{v}-{m}"
        )
        for v in ("v2", "v1")
        for m in ("mean", "add", "concat")
    ],
    pytest.param(lambda: BiMamba(24, variant="separate", merge="add"), 2, id="bimamba-separate"),
]


@pytest.mark.parametrize("make,n_calls", MIXERS)
def test_no_grad_forward_is_fused_and_equals_autograd_path(
    make: Callable[[], torch.nn.Module],
    n_calls: int,
    fused_calls: list[bool],
    assert_close: Callable[..., None],
) -> None:
    mixer = _perturbed(make())
    x = torch.randn(2, 33, 24)
    reference = mixer(x)  # parameters require grad: the autograd path
    assert fused_calls == []
    with torch.inference_mode():
        fast = mixer(x)
    assert (
        fused_calls == [False] * n_calls if n_calls == 1 else sorted(fused_calls) == [False, True]
    )
    assert fast.shape == reference.shape
    assert_close("y", reference, fast, ratio=1e-5)


def test_fused_path_is_skipped_when_it_may_not_run(
    fused_calls: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    mixer = BiMamba(16, d_state=4)
    x = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        mixer(x, mask=mask)
        mixer(x, resets=torch.zeros(2, 9, dtype=torch.bool))
        mixer.double()(x.double())
        mixer.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixer(x)
        monkeypatch.setenv("SSMKIT_BACKEND", "ref")
        mixer(x)
        monkeypatch.delenv("SSMKIT_BACKEND")
        mamba = Mamba(16, d_state=4)
        mamba(x, return_state=True)
        assert fused_calls == []
        mamba(x)
        mixer(x)
    assert len(fused_calls) == 3


def test_workspace_is_reused_and_never_aliases_outputs(assert_close: Callable[..., None]) -> None:
    """Consecutive calls (inference_mode, then no_grad: the buffer is a normal tensor) share one
    scratch buffer, and earlier outputs are not overwritten by later calls."""
    mamba_module.release_inference_workspace()
    mixer = _perturbed(BiMamba(24, d_state=16))
    x1, x2 = torch.randn(2, 33, 24), torch.randn(2, 33, 24)
    reference = mixer(x1).detach()
    with torch.inference_mode():
        y1 = mixer(x1)
    buffer = mamba_module._WORKSPACE.buffer
    assert buffer is not None and not buffer.is_inference()
    kept = y1.clone()
    with torch.no_grad():
        y2 = mixer(x2)
        mixer(x1)
    assert mamba_module._WORKSPACE.buffer is buffer  # reused, not re-allocated
    assert torch.equal(y1, kept) and not torch.equal(y1, y2)
    assert_close("y", reference, y1, ratio=1e-5)
    with (
        mamba_module.inference_workspace(10) as outer,
        mamba_module.inference_workspace(10) as inner,
    ):
        assert outer.data_ptr() != inner.data_ptr()  # nested use gets its own memory
    mamba_module.release_inference_workspace()
    assert mamba_module._WORKSPACE.buffer is None
