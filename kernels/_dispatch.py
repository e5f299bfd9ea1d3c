"""Backend selection shared by every scan operator.

``backend="auto"`` picks Triton for CUDA tensors when triton imports, the fast CPU backend for CPU
tensors, else the reference. ``SSMKIT_BACKEND=ref|cpu|triton`` overrides ``auto`` globally. Asking
for a backend that cannot run raises an error saying how to get it. Nothing here imports triton.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator

import torch

BACKENDS = ("ref", "cpu", "triton")


@functools.cache
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(op: str, backend: str, device: torch.device) -> str:
    """The backend that will run ``op`` on ``device`` for the requested ``backend``.

    Args:
        op: operator name, for error messages.
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"``.
        device: device of the operator's inputs.
    """
    requested = backend
    if requested == "auto":
        requested = os.environ.get("SSMKIT_BACKEND", "auto") or "auto"
    if requested == "auto":
        if device.type == "cuda" and triton_available():
            return "triton"
        return "cpu" if device.type == "cpu" else "ref"
    if requested not in BACKENDS:
        raise ValueError(
            f"{op}: unknown backend {requested!r} (from argument or SSMKIT_BACKEND); "
            f"expected 'auto' or one of {BACKENDS}."
        )
    if requested == "triton":
        if not triton_available():
            raise RuntimeError(
                f"{op}: backend 'triton' needs the triton package: pip install \"ssmkit[triton]\"."
            )
        if device.type != "cuda" and not triton_interpreted():
            raise RuntimeError(
                f"{op}: backend 'triton' got {device.type} tensors. Move them to a CUDA device, "
                "or set TRITON_INTERPRET=1 before importing triton to run the kernels in the "
                "(slow) CPU interpreter, or use backend='cpu'."
            )
    if requested == "cpu" and device.type != "cpu":
        raise RuntimeError(
            f"{op}: backend 'cpu' got {device.type} tensors; use backend='auto' or move them to CPU."
        )
    return requested


@contextlib.contextmanager
def device_guard(tensor: torch.Tensor) -> Iterator[None]:
    """``torch.cuda.device(tensor.device)`` for CUDA tensors, a no-op for CPU tensors.

    Triton launches need the right current CUDA device; the plain guard fails on CPU tensors, which
    is what the interpreter runs on.
    """
    if tensor.device.type == "cuda":
        with torch.cuda.device(tensor.device):
            yield
    else:
        yield


def check_real_floating(
    op: str, name: str, t: object, fix: str = "convert it with `.float()`"
) -> None:
    """Raise ``TypeError`` unless ``t`` is a real floating-point tensor (``op`` and ``name`` say
    where; ``fix`` says how to get one)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}.")
    if not t.is_floating_point():
        raise TypeError(
            f"{op}: `{name}` must be a real floating point tensor, got {t.dtype}; {fix}."
        )


def check_same_device_floats(op: str, **tensors: torch.Tensor | None) -> None:
    """``check_real_floating`` for every tensor given (``None`` skipped), and all on the first
    one's device."""
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if t is None:
            continue
        check_real_floating(op, name, t)
        if t.device != first.device:
            raise ValueError(
                f"{op}: `{name}` is on {t.device} but {first_name} is on {first.device}; move "
                "them to one device."
            )
