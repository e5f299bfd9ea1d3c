"""Reference diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` (pure PyTorch, a loop in time).

This is the specification of :func:`ssmkit.kernels.diag_scan`. It reads like the recurrence:
resets are folded into the coefficients first (REFERENCES.md §1.7, R2I's learned initial state),

    a'_t = a_t * (1 - d_t),    b'_t = b_t + a_t * z * d_t,

so that ``h_t = a'_t * h_{t-1} + b'_t = a_t * ((1 - d_t) * h_{t-1} + d_t * z) + b_t`` exactly, then
one loop runs over time. The loop uses ``unbind`` (never ``x[:, t]``), so autograd's backward is
linear in L.
"""

from __future__ import annotations

import torch


def fold_resets(
    a: torch.Tensor,
    b: torch.Tensor,
    resets: torch.Tensor | None,
    reset_value: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold episode resets (and a learned initial state) into the scan coefficients.

    Args:
        a: decays ``(B, L, *S)`` (already broadcast to ``b``'s shape).
        b: inputs ``(B, L, *S)``.
        resets: ``(B, L)`` bool, True where the state restarts, or None.
        reset_value: ``z`` ``(B, *S)`` (the state a reset restarts from), or None for zero.

    Returns:
        ``(a', b')`` with ``a' = a * (1 - d)`` and ``b' = b + a * z * d``: a plain scan over them is
        the resettable scan, and it stays associative (unlike R2I's four-tuple operator).
    """
    if resets is None:
        return a, b
    d = resets.to(a.real.dtype).reshape(resets.shape + (1,) * (b.dim() - 2))
    a_folded = a * (1 - d)
    if reset_value is None:
        return a_folded, b
    z = reset_value.unsqueeze(1)  # (B or 1, 1, *S)
    return a_folded, b + a * z * d


def diag_scan_ref(
    a: torch.Tensor,
    b: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    reset_value: torch.Tensor | None = None,
    reverse: bool = False,
) -> torch.Tensor:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` over dim 1 (validated, compute-dtype inputs).

    Args:
        a: decays ``(B, L, *S)``, same shape as ``b`` (the dispatcher expands broadcasts).
        b: inputs ``(B, L, *S)``.
        initial_state: ``h_0`` ``(B, *S)``, or None for zeros.
        resets: ``(B, L)`` bool episode starts, or None.
        reset_value: learned initial state ``z`` ``(B, *S)``, or None for zero.
        reverse: scan ``t = L-1 .. 0`` (``h_t = a_t * h_{t+1} + b_t``).

    Returns:
        ``h`` ``(B, L, *S)`` in the compute dtype of ``a`` and ``b``.
    """
    a, b = fold_resets(a, b, resets, reset_value)
    a = a.expand(b.shape) if a.shape != b.shape else a
    if reverse:
        a, b = a.flip(1), b.flip(1)
    h = torch.zeros((), dtype=torch.result_type(a, b), device=b.device)
    if initial_state is not None:
        h = initial_state.to(h.dtype)
    states = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
        states.append(h)
    out = torch.stack(states, dim=1)
    return out.flip(1) if reverse else out
