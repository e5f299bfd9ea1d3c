"""mamba_inner_inference (the fused CPU inference interior of a Mamba mixer) against the reference
built from torch ops and ``selective_scan``'s reference backend: both directions, odd channel
counts, strided views, large |delta| and the softplus threshold, accumulate/scale into strided
outputs, the portable (non-AVX-512) build, unwritten buffers and the no-grad guard."""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from ssmkit.kernels._native_build import _build
from ssmkit.kernels.selective_scan import fused_available, mamba_inner_inference
from ssmkit.kernels.selective_scan.reference import selective_scan_reference

fused = importlib.import_module("ssmkit.kernels.selective_scan.fused")
native = importlib.import_module("ssmkit.kernels.selective_scan.native")

pytestmark = pytest.mark.skipif(
    fused.fused_library() is None,
    reason="no C compiler: the fused kernels cannot be built (callers take the unfused path)",
)


def reference_inner(
    xi: torch.Tensor,
    z: torch.Tensor | None,
    p: dict[str, torch.Tensor | None],
    reverse: bool,
) -> torch.Tensor:
    """The same interior from torch ops: flip, causal conv, SiLU, x_proj, dt_proj, reference scan."""
    x = xi.transpose(1, 2).double()
    zz = None if z is None else z.transpose(1, 2).double()
    if reverse:
        x = x.flip(-1)
        zz = None if zz is None else zz.flip(-1)
    channels, k = x.shape[1], p["conv_w"].shape[-1]
    bias = None if p["conv_b"] is None else p["conv_b"].double()
    conv = F.conv1d(x, p["conv_w"].double(), bias, padding=k - 1, groups=channels)
    u = F.silu(conv[..., : x.shape[-1]])
    rank, n_state = p["dt_w"].shape[1], p["A"].shape[1]
    dt, B, C = torch.split(p["x_w"].double() @ u, [rank, n_state, n_state], dim=1)
    delta = p["dt_w"].double() @ dt
    D = None if p["D"] is None else p["D"].double()
    y = selective_scan_reference(
        u, delta, p["A"].double(), B, C, D, zz, p["dt_b"].double(), delta_softplus=True
    )
    if reverse:
        y = y.flip(-1)
    return y.transpose(1, 2).float()


def make(
    batch: int = 2, length: int = 37, channels: int = 20, n_state: int = 16, rank: int = 3
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    xz = torch.randn(batch, length, 2 * channels)
    params: dict[str, torch.Tensor | None] = {
        "conv_w": torch.randn(channels, 1, 4) * 0.5,
        "conv_b": torch.randn(channels) * 0.1,
        "x_w": torch.randn(rank + 2 * n_state, channels) * 0.4,
        "dt_w": torch.randn(channels, rank),
        "dt_b": torch.randn(channels) - 2.0,
        "A": -(torch.rand(channels, n_state) * 3 + 0.05),
        "D": torch.randn(channels),
    }
    return xz, params


def call(
    xz: torch.Tensor, p: dict[str, torch.Tensor | None], with_z: bool = True, **kwargs: object
) -> torch.Tensor:
    channels = xz.shape[-1] // 2
    return mamba_inner_inference(
        xz[..., :channels],
        xz[..., channels:] if with_z else None,
        p["conv_w"],
        p["conv_b"],
        p["x_w"],
        p["dt_w"],
        p["dt_b"],
        p["A"],
        p["D"],
        **kwargs,
    )


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "channels,n_state,length",
    [(20, 16, 37), (16, 5, 37), (40, 16, 600), (3, 2, 129), (33, 16, 1), (20, 16, 1025)],
)
def test_matches_reference(
    reverse: bool,
    channels: int,
    n_state: int,
    length: int,
    monkeypatch: pytest.MonkeyPatch,
    assert_close: Callable[..., None],
) -> None:
    """Lengths below, across and at multiples of the time chunk (state carried between chunks;
    the chunk is shortened to 64 steps so that short sequences span several)."""
    monkeypatch.setattr(fused, "CHUNK", 64)
    xz, p = make(length=length, channels=channels, n_state=n_state)
    ref = reference_inner(xz[..., :channels], xz[..., channels:], p, reverse)
    out = call(xz, p, reverse=reverse)
    assert_close("y", ref, out, ratio=1e-5)


def test_large_delta_and_softplus_threshold(assert_close: Callable[..., None]) -> None:
    """dt_bias spanning the threshold (x > 20 passes through), far below it (delta ~ 0, the state
    holds) and far above it (delta * A -> -inf territory, the state forgets at once)."""
    channels = 24
    xz, p = make(channels=channels, rank=2)
    p["dt_w"] = p["dt_w"] * 0.01
    p["dt_b"] = torch.tensor([19.9, 20.0, 20.1, 25.0, -30.0, -80.0, 1e4, -1e4] * 3)
    for reverse in (False, True):
        ref = reference_inner(xz[..., :channels], xz[..., channels:], p, reverse)
        assert torch.isfinite(ref).all()
        assert_close("y", ref, call(xz, p, reverse=reverse), ratio=1e-5)


def test_optional_parts_and_accumulate_into_strided_output(
    assert_close: Callable[..., None],
) -> None:
    channels = 20
    xz, p = make(channels=channels)
    p["conv_b"], p["D"] = None, None
    xi = xz[..., :channels]
    forward = reference_inner(xi, None, p, False)
    backward = reference_inner(xi, None, p, True)
    wide = torch.full((2, xz.shape[1], 3 * channels), 7.0)
    out = wide[..., channels : 2 * channels]  # row stride 3E
    call(xz, p, with_z=False, out=out, scale=0.5)
    call(xz, p, with_z=False, reverse=True, out=out, scale=0.5, accumulate=True)
    assert_close("mean", (forward + backward) / 2, out, ratio=1e-5)
    assert (wide[..., :channels] == 7).all() and (wide[..., 2 * channels :] == 7).all()


def test_every_output_element_is_written(nan_poison: None) -> None:
    xz, p = make(channels=20)
    out = call(xz, p)
    assert torch.isfinite(out).all()


def test_inputs_are_untouched() -> None:
    xz, p = make()
    before = xz.clone(), {k: None if v is None else v.clone() for k, v in p.items()}
    call(xz, p)
    assert torch.equal(xz, before[0])
    assert all(v is None or torch.equal(v, before[1][k]) for k, v in p.items())


@pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "gcc")) is None, reason="needs gcc to build the portable C"
)
@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["-O2", "-DSS_PORTABLE", "-fno-math-errno"], id="portable-c"),
        pytest.param(["-O3", "-march=native", "-fno-math-errno"], id="no-openmp"),
    ],
)
def test_other_builds_match(
    flags: list[str], monkeypatch: pytest.MonkeyPatch, assert_close: Callable[..., None]
) -> None:
    """The plain-C path (what machines without AVX-512 run) and a build without OpenMP (then on
    one thread) give the same result."""
    portable = fused._load(_build(fused._SOURCE, fused._NAMES, "mamba_fused_test", (flags,)))
    assert not portable.mf_openmp()
    monkeypatch.setattr(fused, "fused_library", lambda: portable)
    channels = 20
    monkeypatch.setattr(fused, "CHUNK", 64)
    xz, p = make(length=150, channels=channels, n_state=6)  # two chunks
    for reverse in (False, True):
        ref = reference_inner(xz[..., :channels], xz[..., channels:], p, reverse)
        assert_close("y", ref, call(xz, p, reverse=reverse), ratio=1e-5)


def test_inference_only_and_layout_errors() -> None:
    xz, p = make()
    p["A"] = p["A"].requires_grad_()
    assert not fused_available(xz, p["A"])
    with pytest.raises(RuntimeError, match="inference only"):
        call(xz, p)
    with torch.no_grad():
        assert fused_available(xz, p["A"])
        call(xz, p)
        assert not fused_available(xz.double())
        with pytest.raises(ValueError, match="unit stride"):
            mamba_inner_inference(
                xz.transpose(1, 2)[:, :20],
                None,
                *(p[k] for k in ("conv_w", "conv_b", "x_w", "dt_w", "dt_b", "A", "D")),
            )
        with pytest.raises(ValueError, match="accumulate"):
            call(xz, p, accumulate=True)
