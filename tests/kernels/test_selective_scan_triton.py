"""The tiled Triton selective scan (``kernels/selective_scan/triton.py``) against the reference
backend: outputs, last state and every gradient, under ``TRITON_INTERPRET=1`` on CPU tensors (the
default, set by conftest.py), or compiled on CUDA tensors with ``TRITON_INTERPRET=0`` on a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

pytest.importorskip("triton")

from ssmkit.kernels import selective_scan
from ssmkit.kernels.selective_scan import triton as triton_backend

pytestmark = pytest.mark.triton

# compiled kernels on CUDA tensors only when asked (TRITON_INTERPRET=0, see conftest.py)
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETED else "cpu"
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
RATIO_OUT, RATIO_GRAD = 5e-3, 1e-2
# tile length under the interpreter (its only config); lengths below are chosen around it
TILE = 16


def make_inputs(
    batch: int = 2,
    channels: int = 6,
    n_state: int = 4,
    length: int = 33,
    groups: int = 2,
    decay: str = "normal",
) -> dict[str, torch.Tensor]:
    """Leaf tensors (fp32, on DEVICE) for every differentiable argument; B, C grouped."""
    a_scale = {"tiny": 1e-4, "normal": 1.0, "large": 50.0}[decay]
    bc_shape = (batch, groups, n_state, length)
    tensors = {
        "u": torch.randn(batch, channels, length),
        "delta": torch.randn(batch, channels, length) * 0.5,
        "A": -(torch.rand(channels, n_state) + 0.5) * a_scale,
        "B": torch.randn(bc_shape),
        "C": torch.randn(bc_shape),
        "D": torch.randn(channels),
        "z": torch.randn(batch, channels, length),
        "delta_bias": torch.randn(channels) * 0.1,
        "initial_state": torch.randn(batch, channels, n_state),
    }
    return {name: t.to(DEVICE).requires_grad_() for name, t in tensors.items()}


def run(
    function: Callable[..., Any],
    inputs: dict[str, torch.Tensor],
    initial_state: bool = True,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """y, last state and the gradients of a fixed random loss on both w.r.t. every input."""
    y, last = function(
        inputs["u"],
        inputs["delta"],
        inputs["A"],
        inputs["B"],
        inputs["C"],
        inputs["D"],
        inputs["z"],
        inputs["delta_bias"],
        True,
        True,
        initial_state=inputs["initial_state"] if initial_state else None,
        **kwargs,
    )
    generator = torch.Generator().manual_seed(1)
    dy = torch.randn(y.shape, generator=generator).to(y.device)
    dlast = torch.randn(last.shape, generator=generator).to(last.device)
    loss = (y * dy).sum() + (last * dlast).sum()
    names = [n for n in GRAD_NAMES if initial_state or n != "initial_state"]
    grads = torch.autograd.grad(loss, [inputs[n] for n in names])
    return y, last, dict(zip(names, grads))


def reference(*args: Any, **kwargs: Any) -> Any:
    return selective_scan(*args, backend="ref", **kwargs)


def check(
    assert_close: Callable[..., None], inputs: dict[str, torch.Tensor], **kwargs: Any
) -> None:
    y_ref, last_ref, grads_ref = run(reference, inputs, **kwargs)
    y, last, grads = run(triton_backend.selective_scan_triton, inputs, **kwargs)
    assert y.dtype == torch.float32 and last.dtype == torch.float32
    assert_close("tiled y", y_ref, y, RATIO_OUT)
    assert_close("tiled last_state", last_ref, last, RATIO_OUT)
    assert grads.keys() == grads_ref.keys()
    for name, grad_ref in grads_ref.items():
        assert_close(f"tiled d{name}", grad_ref, grads[name], RATIO_GRAD)


def resets_at(batch: int, length: int, *steps: int) -> torch.Tensor:
    resets = torch.zeros(batch, length, dtype=torch.bool)
    for t in steps:
        resets[:, t] = True
    resets[0, length // 3] = True  # one row only: resets differ along the batch
    return resets.to(DEVICE)


# E = 6 channels: not a multiple of the interpreter's BLOCK_E = 4; with G = 2 the second channel
# block straddles both groups (the per-channel B/C path)
@pytest.mark.parametrize("length", [1, 2, 17, 63, 3 * TILE + 2])
def test_lengths_around_the_tile(
    length: int, nan_poison: None, assert_close: Callable[..., None]
) -> None:
    check(assert_close, make_inputs(channels=6, n_state=5, length=length, groups=2))


# (channels, N, G): E % BLOCK_E != 0 with one group; every block inside one of two groups; a
# block straddling two groups with a power-of-two N
@pytest.mark.parametrize("channels,n_state,groups", [(6, 4, 1), (8, 5, 2), (6, 4, 2)])
@pytest.mark.parametrize("initial_state", [True, False])
def test_groups_state_sizes_and_initial_state(
    channels: int,
    n_state: int,
    groups: int,
    initial_state: bool,
    nan_poison: None,
    assert_close: Callable[..., None],
) -> None:
    inputs = make_inputs(channels=channels, n_state=n_state, length=2 * TILE + 7, groups=groups)
    check(assert_close, inputs, initial_state=initial_state)


@pytest.mark.parametrize("reverse", [False, True])
def test_resets_and_reverse(
    reverse: bool, nan_poison: None, assert_close: Callable[..., None]
) -> None:
    length = 3 * TILE + 5
    # at the first step, at a tile start, just before one and inside the last (partial) tile
    resets = resets_at(2, length, 0, TILE, 2 * TILE - 1, 3 * TILE + 2)
    inputs = make_inputs(channels=8, n_state=5, length=length, groups=2)
    check(assert_close, inputs, resets=resets, reverse=reverse)


@pytest.mark.parametrize("decay", ["tiny", "large"])
def test_decays_tiny_and_large(
    decay: str, nan_poison: None, assert_close: Callable[..., None]
) -> None:
    inputs = make_inputs(channels=6, n_state=4, length=2 * TILE + 3, groups=1, decay=decay)
    check(assert_close, inputs, resets=resets_at(2, 2 * TILE + 3, TILE + 1))


class _FixedConfig:
    """Stands in for an autotuned kernel and launches it with one given config."""

    def __init__(self, autotuned: Any, **config: Any) -> None:
        self.kernel = autotuned.fn  # the heuristics wrapper under the autotuner
        self.config = config

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        return lambda *args, **kwargs: self.kernel[grid](*args, **kwargs, **self.config)


@pytest.mark.parametrize(
    "forward,backward",
    [
        ({"BLOCK_E": 4, "T": 2 * TILE}, {"BLOCK_E": 2, "T": TILE}),
        ({"BLOCK_E": 8, "T": TILE}, {"BLOCK_E": 4, "T": 2 * TILE}),
    ],
)
def test_forward_and_backward_tiles_may_differ(
    forward: dict,
    backward: dict,
    monkeypatch: pytest.MonkeyPatch,
    nan_poison: None,
    assert_close: Callable[..., None],
) -> None:
    """States are stored every STATE_T steps (inside the forward's tiles when they are longer),
    so the autotuner may pick different tile lengths and channel blocks for the two kernels."""
    if DEVICE == "cuda":
        pytest.skip("exercises the interpreter's config space; the GPU autotunes")
    assert triton_backend._state_stride() == TILE
    monkeypatch.setattr(
        triton_backend, "_forward_kernel", _FixedConfig(triton_backend._forward_kernel, **forward)
    )
    monkeypatch.setattr(
        triton_backend,
        "_backward_kernel",
        _FixedConfig(triton_backend._backward_kernel, **backward),
    )
    length = 4 * TILE + 3
    inputs = make_inputs(batch=1, channels=6, n_state=5, length=length, groups=2)
    check(assert_close, inputs, resets=resets_at(1, length, TILE + 3))


_COMPILE_FOR_GPU = """
import importlib, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
module = importlib.import_module("ssmkit.kernels.selective_scan.triton")
for kernel, flags in ((module._forward_kernel, {"HAS_H0": True}), (module._backward_kernel, {})):
    fn = kernel.fn.fn  # under the autotuner and the heuristics
    for one_group in (True, False):
        constexprs = {
            "HAS_KEEP": True, "STATE_T": 32, "BLOCK_E": 8, "BLOCK_N": 16, "T": 64,
            "ONE_GROUP": one_group, **flags,
        }
        signature = {
            n: "constexpr" if n in constexprs else "*fp32" if n.endswith("_ptr") else "i32"
            for n in fn.arg_names
        }
        compiled = triton.compile(
            ASTSource(fn, signature, constexprs),
            target=GPUTarget("cuda", 90, 32),
            options={"num_warps": 8},
        )
        assert "ld.global" in compiled.asm["ptx"]
print("ok")
"""


def test_kernels_compile_for_a_gpu_without_one() -> None:
    """The interpreter does not type-check like the compiler: compile both kernels (both B/C
    paths, a tile longer than the state stride) for sm_90 in a subprocess, no GPU needed."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_GPU], env=env, capture_output=True, text=True
    )
    if result.returncode != 0 and "ptxas" in result.stderr:
        pytest.skip(f"triton's ptxas is unavailable here: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
