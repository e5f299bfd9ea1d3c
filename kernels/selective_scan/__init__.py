"""``selective_scan``: the Mamba-1 (S6) scan behind one dispatcher.

Backends: ``ref`` (``reference.py``, the specification), ``cpu`` (``cpu.py``, chunked, with its
own backward) and ``triton`` (``triton.py``, imported only when chosen). See README.md beside this
file for the math and the dtype rules.
"""

from __future__ import annotations

import importlib

import torch

from ssmkit.kernels._dispatch import resolve_backend
from ssmkit.kernels.selective_scan.fused import fused_available, mamba_inner_inference

__all__ = ["fused_available", "mamba_inner_inference", "selective_scan"]

_OP = "selective_scan"
_MODULES = {
    "ref": ("ssmkit.kernels.selective_scan.reference", "selective_scan_reference"),
    "cpu": ("ssmkit.kernels.selective_scan.cpu", "selective_scan_cpu"),
    "triton": ("ssmkit.kernels.selective_scan.triton", "selective_scan_triton"),
}


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}"


def _check_float(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}.")
    if not t.is_floating_point():
        raise TypeError(
            f"{_OP}: {name} must be a real floating tensor (fp32, bf16, fp16 or fp64), got "
            f"{_describe(t)}; convert it with `.float()`."
        )


def _check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...], layout: str) -> None:
    if tuple(t.shape) != expected:
        raise ValueError(
            f"{_OP}: {name} must have shape {layout} = {expected}, got {tuple(t.shape)}."
        )


def _check_bc(name: str, t: torch.Tensor, batch: int, channels: int, length: int) -> int:
    _check_float(name, t)
    if t.dim() not in (3, 4):
        raise ValueError(
            f"{_OP}: {name} must be (B, N, L) shared or (B, G, N, L) grouped, got {t.dim()} "
            f"dims, shape {tuple(t.shape)}. (Time-invariant (E, N) B/C is not supported: "
            f"expand it to (B, N, L).)"
        )
    if t.shape[0] != batch or t.shape[-1] != length:
        raise ValueError(
            f"{_OP}: {name} shape {tuple(t.shape)} does not match u's batch {batch} and "
            f"length {length} (expected (B, ..., L) = ({batch}, ..., {length}))."
        )
    groups = 1 if t.dim() == 3 else t.shape[1]
    if groups < 1 or channels % groups != 0:
        raise ValueError(
            f"{_OP}: {name} has G={groups} groups, which must divide the {channels} channels "
            "of u (each group serves E/G consecutive channels)."
        )
    return t.shape[-2]


def _validate(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    resets: torch.Tensor | None,
) -> None:
    _check_float("u", u)
    if u.dim() != 3:
        raise ValueError(
            f"{_OP}: u must be (B, E, L) (channels before time, as in mamba_ssm), got shape "
            f"{tuple(u.shape)}; for (B, L, E) activations pass `u.transpose(1, 2)`."
        )
    batch, channels, length = u.shape
    if length < 1:
        raise ValueError(f"{_OP}: u has length L={length}; the scan needs L >= 1.")
    _check_float("delta", delta)
    _check_shape("delta", delta, (batch, channels, length), "(B, E, L)")
    _check_float("A", A)
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(
            f"{_OP}: A must be (E, N) with E={channels} (u's channels), got {tuple(A.shape)}."
        )
    n_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if _check_bc(name, t, batch, channels, length) != n_state:
            raise ValueError(
                f"{_OP}: {name} has state size N={t.shape[-2]} but A has N={n_state} "
                f"({name} {tuple(t.shape)}, A {tuple(A.shape)})."
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check_float(name, t)
            _check_shape(name, t, (channels,), "(E,)")
    if z is not None:
        _check_float("z", z)
        _check_shape("z", z, (batch, channels, length), "(B, E, L)")
    if initial_state is not None:
        _check_float("initial_state", initial_state)
        _check_shape("initial_state", initial_state, (batch, channels, n_state), "(B, E, N)")
    if resets is not None:
        if not isinstance(resets, torch.Tensor) or resets.dtype != torch.bool:
            seen = _describe(resets) if isinstance(resets, torch.Tensor) else type(resets).__name__
            raise TypeError(
                f"{_OP}: resets must be a bool tensor (B, L), got {seen}; pass `resets.bool()`."
            )
        _check_shape("resets", resets, (batch, length), "(B, L)")
    tensors = [
        t for t in (delta, A, B, C, D, z, delta_bias, initial_state, resets) if t is not None
    ]
    for t in tensors:
        if t.device != u.device:
            raise ValueError(
                f"{_OP}: all inputs must be on one device; u is on {u.device}, another input "
                f"{tuple(t.shape)} is on {t.device}."
            )


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    initial_state: torch.Tensor | None = None,
    reverse: bool = False,
    resets: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan (Gu & Dao 2023, https://arxiv.org/abs/2312.00752), a drop-in for
    ``mamba_ssm``'s ``selective_scan_fn`` with keyword-only extensions.

    ``delta = softplus(delta + delta_bias)`` (if ``delta_softplus``); ``dA = exp(delta * A)``;
    ``h_t = dA_t * h_{t-1} + delta_t * B_t * u_t``; ``y_t = <C_t, h_t> + D * u_t``;
    ``y *= silu(z)``. The state is kept in fp32; ``y`` comes back in u's dtype.

    Args:
        u: input (B, E, L); fp32, bf16, fp16 or fp64.
        delta: step sizes (B, E, L).
        A: real state matrix (E, N).
        B: (B, N, L), or grouped (B, G, N, L) with E % G == 0 (group g serves channels
            [g*E/G, (g+1)*E/G), how 2-D scans run K directions in one call).
        C: output projection, same layouts as ``B``.
        D: skip (E,).
        z: gate (B, E, L).
        delta_bias: (E,) added to delta before the softplus.
        delta_softplus: apply softplus (threshold 20) to delta.
        return_last_state: also return the final state (B, E, N), fp32, with gradient.
        initial_state: state before the first step (B, E, N), with gradient.
        reverse: scan t = L-1 .. 0 (the last state is then the state after t = 0).
        resets: (B, L) bool; at t with resets[:, t] the state restarts (h_{t-1} treated as 0).
            With ``reverse``, resets[:, t] marks where the reversed scan restarts.
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"`` (env ``SSMKIT_BACKEND``
            overrides ``"auto"``).

    Returns:
        y (B, E, L), or ``(y, last_state)`` when ``return_last_state``.
    """
    _validate(u, delta, A, B, C, D, z, delta_bias, initial_state, resets)
    name = resolve_backend(_OP, backend, u.device)
    module_name, function_name = _MODULES[name]
    function = getattr(importlib.import_module(module_name), function_name)
    return function(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        return_last_state,
        initial_state=initial_state,
        reverse=reverse,
        resets=resets,
    )
