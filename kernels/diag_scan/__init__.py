"""``diag_scan``: the diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over dim 1.

Used by S5, LRU, ConvS5 (trailing dims ``(H, W, P)``) and R2I-style world models (resets with a
learned initial state). Real (fp32, bf16/fp16 inputs computed in fp32) or complex64 coefficients;
float64/complex128 stay in double (for gradcheck). See README.md for the math.
"""

from __future__ import annotations

import torch

from ssmkit.kernels._dispatch import resolve_backend

__all__ = ["diag_scan"]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32 / complex64, or their double versions when any input is double."""
    double = any(t.dtype in (torch.float64, torch.complex128) for t in tensors)
    if any(t.is_complex() for t in tensors):
        return torch.complex128 if double else torch.complex64
    return torch.float64 if double else torch.float32


def _check_float(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"diag_scan: `{name}` must be a torch.Tensor, got {type(t).__name__}.")
    if not (t.is_floating_point() or t.is_complex()):
        raise TypeError(
            f"diag_scan: `{name}` must be a floating point or complex tensor, got {t.dtype}; "
            f"convert it with `{name}.float()`."
        )
    return t


def _check_broadcast(name: str, t: torch.Tensor, target: tuple[int, ...], what: str) -> None:
    try:
        shape = torch.broadcast_shapes(t.shape, target)
    except RuntimeError:
        shape = None
    if shape != torch.Size(target):
        raise ValueError(
            f"diag_scan: `{name}` has shape {tuple(t.shape)}, which does not broadcast to "
            f"{what} {tuple(target)}."
        )


def diag_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    reset_value: torch.Tensor | None = None,
    reverse: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """All states of the diagonal recurrence ``h_t = a_t * h_{t-1} + b_t`` over dim 1.

    With resets ``d_t`` and a learned initial state ``z`` (R2I, REFERENCES.md §1.7):
    ``h_t = a_t * ((1 - d_t) * h_{t-1} + d_t * z) + b_t``. The state is kept in fp32 (complex64).

    Args:
        a: decays ``(B, L, *S)``, or any shape broadcastable to ``b`` (e.g. ``(1, 1, *S)`` for a
            constant Λ̄), real or complex.
        b: inputs ``(B, L, *S)``, real or complex.
        initial_state: ``h_0`` broadcastable to ``(B, *S)`` (``h_{L+1}`` when ``reverse``).
        resets: ``(B, L)`` bool, True where the state restarts (h_{t-1} replaced by ``z``).
        reset_value: ``z`` broadcastable to ``(B, *S)``; None restarts from zero.
        reverse: scan ``t = L-1 .. 0``; then ``resets[:, t]`` marks where the reversed scan restarts.
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"``.

    Returns:
        ``h`` ``(B, L, *S)`` in the inputs' dtype (complex64 if any input is complex). The final
        state is ``h[:, -1]`` (``h[:, 0]`` when ``reverse``). Gradients flow to ``a``, ``b``,
        ``initial_state`` and ``reset_value``.
    """
    _check_float("a", a)
    _check_float("b", b)
    if b.dim() < 2:
        raise ValueError(
            f"diag_scan: `b` must have shape (B, L, *S) with at least 2 dims, got {tuple(b.shape)}."
        )
    _check_broadcast("a", a, tuple(b.shape), "`b`'s shape")
    state_shape = (b.shape[0], *b.shape[2:])
    tensors = [a, b]
    if initial_state is not None:
        _check_float("initial_state", initial_state)
        _check_broadcast("initial_state", initial_state, state_shape, "the state shape (B, *S)")
        tensors.append(initial_state)
    if reset_value is not None:
        _check_float("reset_value", reset_value)
        _check_broadcast("reset_value", reset_value, state_shape, "the state shape (B, *S)")
        if resets is None:
            raise ValueError(
                "diag_scan: `reset_value` was given without `resets`; pass resets (B, L) bool "
                "marking where the state restarts from it (use `initial_state` for h_0)."
            )
        tensors.append(reset_value)
    if resets is not None:
        if not isinstance(resets, torch.Tensor) or resets.dtype != torch.bool:
            raise TypeError(
                "diag_scan: `resets` must be a bool tensor (B, L), got "
                f"{getattr(resets, 'dtype', type(resets).__name__)}; use `resets.bool()`."
            )
        if tuple(resets.shape) != tuple(b.shape[:2]):
            raise ValueError(
                f"diag_scan: `resets` must have shape (B, L) = {tuple(b.shape[:2])}, "
                f"got {tuple(resets.shape)}."
            )
    for t in tensors[1:]:
        if t.device != b.device:
            raise ValueError(f"diag_scan: all inputs must be on {b.device}, got one on {t.device}.")

    dtype = _compute_dtype(*tensors)
    out_dtype = dtype if dtype.is_complex else torch.promote_types(a.dtype, b.dtype)
    a_c, b_c = a.to(dtype), b.to(dtype)
    h0 = initial_state.to(dtype).expand(state_shape) if initial_state is not None else None
    z = reset_value.to(dtype).expand(state_shape) if reset_value is not None else None

    which = resolve_backend("diag_scan", backend, b.device)
    if which == "triton":
        from ssmkit.kernels.diag_scan.triton import diag_scan_triton as run
    elif which == "cpu":
        from ssmkit.kernels.diag_scan.cpu import diag_scan_cpu as run
    else:
        from ssmkit.kernels.diag_scan.reference import diag_scan_ref as run
    h = run(a_c, b_c, h0, resets, z, reverse)
    return h.to(out_dtype)
