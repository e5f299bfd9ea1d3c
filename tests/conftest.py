"""Shared test fixtures: seeding, the real data sets in ../shared/data, NaN poisoning, tolerances.

Helpers are fixtures (tests run with ``--import-mode=importlib`` and there is no tests package):

- ``shared_data``: ``Path`` to ``../shared/data``, or the test is skipped with the reason.
- ``nan_poison``: while active, ``torch.empty``/``torch.empty_like`` return NaN-filled floating
  tensors, so a kernel that forgets to write part of a buffer fails loudly.
- ``assert_close(name, ref, fast, ratio=5e-3)``: FLA's relative-RMS check
  ``rms(ref - fast) / rms(ref) <= ratio`` (or max-abs error <= 1e-6), failing on NaN.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# Triton kernels are tested in its CPU interpreter on CPU tensors, on a GPU machine too (the
# kernel tests build CPU tensors; `ssmkit bench scan_gpu` checks and times the compiled kernels on
# a GPU). Set TRITON_INTERPRET=0 to run the tests that support it on CUDA tensors. Triton reads
# this when a kernel is decorated, so it must be set before any ssmkit Triton module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    torch.manual_seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # numpy is optional for the core install
        pass


def _find_shared_data() -> Path | None:
    candidates = [os.environ.get("SSMKIT_SHARED_DATA"), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _find_shared_data()
    if path is None:
        pytest.skip(
            "real data sets not found: expected ../shared/data beside the checkout "
            "(or set SSMKIT_SHARED_DATA)"
        )
    return path


@pytest.fixture
def nan_poison(monkeypatch: pytest.MonkeyPatch) -> None:
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poisoned(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_floating_point() or tensor.is_complex():
            tensor.fill_(float("nan"))
        return tensor

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poisoned(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poisoned(real_empty_like(*a, **k)))


def relative_rms_error(ref: torch.Tensor, fast: torch.Tensor) -> float:
    ref, fast = (
        ref.detach().to(torch.complex128 if ref.is_complex() else torch.float64),
        fast.detach(),
    )
    fast = fast.to(ref.dtype)
    err = (ref - fast).abs().pow(2).mean().sqrt()
    base = ref.abs().pow(2).mean().sqrt()
    return float(err / base.clamp_min(1e-30))


def _assert_close(name: str, ref: torch.Tensor, fast: torch.Tensor, ratio: float = 5e-3) -> None:
    assert ref.shape == fast.shape, (
        f"{name}: shape {tuple(fast.shape)} != reference {tuple(ref.shape)}"
    )
    assert not torch.isnan(fast).any(), f"{name}: NaN in the tested output"
    assert not torch.isnan(ref).any(), f"{name}: NaN in the reference"
    wide = torch.complex128 if ref.is_complex() or fast.is_complex() else torch.float64
    diff = ref.detach().to(wide) - fast.detach().to(wide)
    max_abs = float(diff.abs().max()) if ref.numel() else 0.0
    if max_abs <= 1e-6:
        return
    rel = relative_rms_error(ref, fast)
    assert rel <= ratio, (
        f"{name}: relative RMS error {rel:.3e} > {ratio:.1e} (max abs {max_abs:.3e})"
    )


@pytest.fixture
def assert_close() -> Callable[..., None]:
    return _assert_close


@pytest.fixture
def num_threads() -> Iterator[Callable[[int], None]]:
    """``torch.set_num_threads`` for this test; the count before it is restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def native_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[object, str], list[int]]:
    """``spy(module, function)``: skip the test when ``module.native_library()`` is not built,
    else count the calls of ``module.<function>.apply`` (a torch.autograd.Function) in the list
    it returns; the spy is removed after the test."""

    def spy(module: object, function: str) -> list[int]:
        if module.native_library() is None:
            pytest.skip("no C compiler (or SSMKIT_NATIVE=0): the native kernel is not built")
        calls: list[int] = []
        cls = getattr(module, function)
        real = cls.apply
        monkeypatch.setattr(cls, "apply", lambda *a: calls.append(1) or real(*a))
        return calls

    return spy


@pytest.fixture
def native_without_openmp(
    monkeypatch: pytest.MonkeyPatch, num_threads: Callable[[int], None]
) -> Callable[..., object]:
    """``use(module, probe)``: build a native kernel module's C source (``module._SOURCE``,
    ``module._NAMES``) without OpenMP, so its work splits over Python threads, make it the
    module's ``native_library()`` and return it. The test runs on 2 threads (restored after)."""
    import ctypes

    from ssmkit.kernels._native_build import _build

    def use(module: object, probe: str) -> object:
        if module.native_library() is None:
            pytest.skip("no C compiler: the native kernel is not built")
        flags = (["-O3", "-fopenmp-simd", "-fno-math-errno"],)
        stem = f"{module.__name__.rsplit('.', 2)[-2]}_noomp"
        library = _build(module._SOURCE, module._NAMES, stem, flags)
        getattr(library, probe).restype = ctypes.c_int64
        assert not getattr(library, probe)()
        monkeypatch.setattr(module, "native_library", lambda: library)
        return library

    num_threads(2)
    return use
