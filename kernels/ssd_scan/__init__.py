"""``ssd_scan``: the Mamba-2 SSD chunked scan (scalar decay per head), three backends.

A drop-in for mamba_ssm's ``mamba_chunk_scan_combined`` (same argument names and shapes). See
README.md for the math and ``reference.py`` for the specification.
"""

from __future__ import annotations

import torch

from ssmkit.kernels._dispatch import resolve_backend

__all__ = ["ssd_scan"]


def _fail(msg: str) -> None:
    raise ValueError(f"ssd_scan: {msg}")


def _check_tensor(name: str, t: object, shape: tuple[int | None, ...], *, integer: bool = False):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"ssd_scan: `{name}` must be a torch.Tensor, got {type(t).__name__}.")
    if integer:
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"ssd_scan: `{name}` must be an integer tensor, got {t.dtype}.")
    elif not t.is_floating_point():
        raise TypeError(
            f"ssd_scan: `{name}` must be a real floating point tensor, got {t.dtype}; "
            f"use `{name}.float()`."
        )
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        _fail(f"`{name}` must have shape {want}, got {tuple(t.shape)}.")


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 256,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2 SSD: ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t ⊗ B_t``, ``y_t = h_t C_t + D x_t``.

    (Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
    Structured State Space Duality", ICML 2024.) dt, its cumsum and the states are fp32.

    Args:
        x: ``(b, l, h, p)``.
        dt: ``(b, l, h)``.
        A: ``(h,)`` (negative for a decaying state).
        B, C: ``(b, l, g, n)`` with ``h % g == 0``.
        chunk_size: chunk length Q (any L works; the last chunk is padded internally).
        D: ``(h,)`` or ``(h, p)`` skip connection.
        z: ``(b, l, h, p)``: ``y *= silu(z)``.
        dt_bias: ``(h,)`` added to dt before the softplus.
        initial_states: ``(b, h, p, n)``; it starts the first sequence of each row.
        seq_idx: ``(b, l)`` integer: the state restarts from zero where it changes.
        cu_seqlens: ``(num_seqs + 1,)`` cumulative sequence lengths of a packed batch (b == 1,
            ``cu_seqlens[-1] == l``).
        dt_softplus: ``dt = softplus(dt + dt_bias)``.
        dt_limit: ``(min, max)`` clamp of dt after the softplus.
        return_final_states: also return the final states.
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"``.

    Returns:
        ``y`` ``(b, l, h, p)`` in x's dtype, or ``(y, final_states)`` with final states fp32
        ``(b, h, p, n)`` (``(num_seqs, h, p, n)`` with cu_seqlens). Both carry gradients.
    """
    _check_tensor("x", x, (None, None, None, None))
    bsz, length, nheads, headdim = x.shape
    if length < 1:
        _fail(f"`x` must have at least one time step, got l = {length}.")
    _check_tensor("dt", dt, (bsz, length, nheads))
    _check_tensor("A", A, (nheads,))
    _check_tensor("B", B, (bsz, length, None, None))
    ngroups, dstate = B.shape[2], B.shape[3]
    _check_tensor("C", C, (bsz, length, ngroups, dstate))
    if ngroups < 1 or nheads % ngroups:
        _fail(
            f"the number of heads h = {nheads} must be a multiple of the B/C groups g = {ngroups}."
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        _fail(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    if D is not None:
        if not isinstance(D, torch.Tensor) or D.shape not in ((nheads,), (nheads, headdim)):
            _fail(
                f"`D` must have shape (h,) = ({nheads},) or (h, p) = ({nheads}, {headdim}), "
                f"got {tuple(getattr(D, 'shape', ()))}."
            )
        _check_tensor("D", D, tuple(D.shape))
    if z is not None:
        _check_tensor("z", z, tuple(x.shape))
    if dt_bias is not None:
        _check_tensor("dt_bias", dt_bias, (nheads,))
    if initial_states is not None:
        if cu_seqlens is not None:
            _fail(
                "`initial_states` with `cu_seqlens` is not supported (each packed sequence starts "
                "from zero); scan the sequences that need a starting state separately."
            )
        _check_tensor("initial_states", initial_states, (bsz, nheads, headdim, dstate))
    if seq_idx is not None and cu_seqlens is not None:
        _fail("pass either `seq_idx` or `cu_seqlens`, not both.")
    if seq_idx is not None:
        _check_tensor("seq_idx", seq_idx, (bsz, length), integer=True)
    if cu_seqlens is not None:
        _check_tensor("cu_seqlens", cu_seqlens, (None,), integer=True)
        if bsz != 1:
            _fail(f"`cu_seqlens` needs a packed batch with b == 1, got b = {bsz}.")
        cu = cu_seqlens.tolist()
        if len(cu) < 2 or cu[0] != 0 or cu[-1] != length or any(q <= p for p, q in zip(cu, cu[1:])):
            _fail(
                f"`cu_seqlens` must start at 0, increase strictly and end at l = {length}; "
                f"got {cu}."
            )
    lo, hi = dt_limit
    if not lo <= hi:
        _fail(f"`dt_limit` must be (min, max) with min <= max, got {dt_limit}.")
    for name, t in (("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("dt_bias", dt_bias), ("initial_states", initial_states),
                    ("seq_idx", seq_idx), ("cu_seqlens", cu_seqlens)):  # fmt: skip
        if t is not None and t.device != x.device:
            _fail(f"`{name}` is on {t.device} but `x` is on {x.device}; move it to {x.device}.")

    which = resolve_backend("ssd_scan", backend, x.device)
    if which == "triton":
        from ssmkit.kernels.ssd_scan.triton import ssd_scan_triton as run
    elif which == "cpu":
        from ssmkit.kernels.ssd_scan.cpu import ssd_scan_cpu as run
    else:
        from ssmkit.kernels.ssd_scan.reference import ssd_scan_ref as run
    y, final_states = run(
        x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, cu_seqlens,
        dt_softplus, tuple(dt_limit),
    )  # fmt: skip
    return (y, final_states) if return_final_states else y
