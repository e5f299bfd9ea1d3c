"""Regression: 2-D U-Mamba_Enc backward aborted with heap corruption (torch 2.14.1, CPU, oneDNN).

Trigger, found by tracing every convolution: the backward of a 1x1 stride-2 Conv2d (the residual
shortcut of a strided encoder block) whose *input* is a channels-last view (the Mamba layer's
(B, L, C) -> (B, C, H, W) transpose) while its grad_output is contiguous. A plain-torch repro:
``x = randn(2, 64 * 64, 8).transpose(1, 2).reshape(2, 8, 64, 64).requires_grad_()``;
``Conv2d(8, 16, 1, stride=2, bias=False)(x).backward(randn(2, 16, 32, 32))`` ->
"free(): invalid next size" (48x48 and 64x64 crash; 40x40, 3x3 kernels and 3-D did not).
MambaLayer therefore returns contiguous maps. The network repro runs in a subprocess so that an
abort fails the test instead of killing the test session.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ssmkit.bio import MambaLayer, SegMamba, UMambaBot, UMambaEnc

_REPRO = """
import torch
torch.set_num_threads(1)
from ssmkit.bio import UMambaEnc
torch.manual_seed(0)
net = UMambaEnc(2, 1, 2, channels=(8, 16, 32, 64, 128), strides=(1, 2, 2, 2, 2))
net(torch.randn(2, 1, 64, 64)).sum().backward()
print("backward ok")
"""

TINY = dict(channels=(4, 8, 16), strides=(1, 2, 2), n_conv_per_stage=1, d_state=4)


def _permuted(t: torch.Tensor) -> bool:
    """True for a view whose axes are not in (B, C, *S) memory order (e.g. channels-last).

    Narrowed NCHW views (the channel slices that ``torch.cat``'s backward hands out) keep the
    order and are fine; the crash needs a channels-last operand next to a contiguous one.
    """
    strides = [st for size, st in zip(t.shape[1:], t.stride()[1:]) if size > 1]
    return any(a < b for a, b in zip(strides, strides[1:]))


class _ConvOperands(TorchDispatchMode):
    """Records permuted (channels-last-like) operands of 2-D/3-D convolutions, fwd and bwd."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten.convolution.default:
            named = {"input": args[0]}
        elif func is torch.ops.aten.convolution_backward.default:
            named = {"grad_output": args[0], "input": args[1]}
        else:
            named = {}
        for role, t in named.items():
            # 3-dim operands are the causal conv1d inside the core Mamba block (not bio's).
            if t.dim() >= 4 and _permuted(t):
                self.found.append((f"{func.__name__}:{role}", tuple(t.shape), t.stride()))
        return func(*args, **(kwargs or {}))


def test_mamba_layer_returns_contiguous_maps() -> None:
    layer = MambaLayer(channels=4, d_state=4)
    assert layer(torch.randn(1, 4, 5, 6)).is_contiguous()


@pytest.mark.parametrize(
    "name",
    ["umamba_bot_2d", "umamba_enc_2d", "umamba_bot_3d", "umamba_enc_3d", "segmamba"],
)
def test_no_strided_view_reaches_a_convolution(name: str) -> None:
    """No 2-D/3-D conv of the bio networks sees a channels-last view, forward or backward."""
    if name == "segmamba":
        net: torch.nn.Module = SegMamba(
            3, 1, 2, feature_size=(4, 8, 8, 16), depths=(1, 1, 1, 1), hidden_size=16, d_state=4
        )
        x = torch.randn(1, 1, 32, 16, 16)
    else:
        cls = UMambaBot if name.startswith("umamba_bot") else UMambaEnc
        dims = int(name[-2])
        net = cls(dims, 1, 2, **TINY)
        x = torch.randn(2, 1, *([16] * dims))
    audit = _ConvOperands()
    with audit:
        net(x).square().mean().backward()
    assert not audit.found, audit.found


def test_umamba_enc_2d_backward_does_not_corrupt_the_heap() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _REPRO], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "backward ok" in result.stdout, result.stderr[-2000:]
