"""Reference SSD (Mamba-2 state space duality) chunked scan, pure PyTorch in fp32.

The specification of :func:`ssmkit.kernels.ssd_scan` (Dao & Gu, "Transformers are SSMs", 2024,
§6 and Listing 1; REFERENCES.md §1.3). Per head the recurrence is

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t ⊗ B_t        (P x N)
    y_t = h_t C_t + D * x_t        (times silu(z_t) when z is given)

computed chunk by chunk (chunk length Q), with ``a_t = dt_t * A`` and Acum its in-chunk cumsum:

1. intra-chunk (quadratic, attention-like): ``Y_diag = (C Bᵀ ∘ exp(segsum(a))) (dt x)``;
2. chunk states: ``S_c = Σ_s exp(Acum_Q - Acum_s) dt_s x_s ⊗ B_s``;
3. inter-chunk recurrence: ``H_c = exp(Acum_Q) H_{c-1} + S_c`` (H_0 = initial state);
4. state read-out: ``Y_off_t = exp(Acum_t) H_{c-1} C_t``.

Packed sequences (``seq_idx``): every term that would cross a sequence boundary is masked, so each
sequence behaves as if scanned alone (the initial state belongs to the first sequence). The last
chunk is padded with ``dt = 0`` (decay 1, no input), so any L works and the final state is the
state after the last real step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Stable segment sums: ``out[..., t, s] = Σ_{r=s+1..t} a_r`` for t >= s, else -inf.

    Built with a masked cumsum rather than ``cumsum_t - cumsum_s`` (which cancels catastrophically
    for long chunks with large decays).

    Args:
        a: ``(..., T)``.

    Returns:
        ``(..., T, T)``.
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    x = a.unsqueeze(-1).expand(*a.shape, T)  # x[..., r, s] = a_r
    x = x.masked_fill(~torch.tril(ones, diagonal=-1), 0.0)  # keep r > s
    out = x.cumsum(dim=-2)
    return out.masked_fill(~torch.tril(ones), float("-inf"))


def process_dt(
    dt: torch.Tensor,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
) -> torch.Tensor:
    """``dt <- clamp(softplus(dt + dt_bias), *dt_limit)`` in fp32 (softplus threshold 20).

    float64 ``dt`` stays float64 (gradcheck); anything else is computed in fp32.
    """
    dt = dt.double() if dt.dtype == torch.float64 else dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != (0.0, float("inf")):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def segment_ids(seq_idx: torch.Tensor) -> torch.Tensor:
    """Canonical segment ids ``(b, l)``: a new id wherever ``seq_idx`` changes from t-1 to t."""
    change = torch.zeros_like(seq_idx, dtype=torch.long)
    change[:, 1:] = (seq_idx[:, 1:] != seq_idx[:, :-1]).long()
    return change.cumsum(dim=1)


def cu_seqlens_to_seq_idx(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """``(1, l)`` sequence index of each position of a packed batch from ``cu_seqlens``."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    ids = torch.arange(lengths.numel(), device=cu_seqlens.device)
    return torch.repeat_interleave(ids, lengths, output_size=length).unsqueeze(0)


def ssd_scan_ref(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD on validated inputs (see :func:`ssmkit.kernels.ssd_scan` for the contract).

    Args:
        x: ``(b, l, h, p)``.
        dt: ``(b, l, h)`` raw step sizes.
        A: ``(h,)`` one (negative) scalar per head.
        B, C: ``(b, l, g, n)``; group ``g`` serves heads ``[g*h/G, (g+1)*h/G)``.
        chunk_size: Q.
        D: ``(h,)`` or ``(h, p)`` skip, or None.
        z: ``(b, l, h, p)`` gate, or None.
        dt_bias: ``(h,)``, or None.
        initial_states: ``(b, h, p, n)``, or None.
        seq_idx: ``(b, l)`` integer sequence index (packed sequences), or None.
        cu_seqlens: ``(num_seqs + 1,)`` cumulative lengths (b == 1), or None.
        dt_softplus: apply softplus to ``dt + dt_bias``.
        dt_limit: clamp range of dt.

    Returns:
        ``y`` ``(b, l, h, p)`` in x's dtype and the final states in fp32: ``(b, h, p, n)``, or
        ``(num_seqs, h, p, n)`` (one per sequence) with ``cu_seqlens``.
    """
    bsz, length, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    Q = chunk_size
    pad = (-length) % Q
    nchunks = (length + pad) // Q

    ftype = torch.float64 if x.dtype == torch.float64 else torch.float32  # float64: gradcheck
    dt = process_dt(dt.to(ftype), dt_bias, dt_softplus, dt_limit)
    if cu_seqlens is not None:
        seq_idx = cu_seqlens_to_seq_idx(cu_seqlens, length)
    seg = segment_ids(seq_idx) if seq_idx is not None else None

    xf = x.to(ftype)
    xdt = xf * dt.unsqueeze(-1)
    Bh = B.to(ftype).repeat_interleave(nheads // ngroups, dim=2)  # (b, l, h, n)
    Ch = C.to(ftype).repeat_interleave(nheads // ngroups, dim=2)
    if pad:
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        Bh = F.pad(Bh, (0, 0, 0, 0, 0, pad))
        Ch = F.pad(Ch, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        if seg is not None:
            seg = torch.cat([seg, seg[:, -1:].expand(bsz, pad)], dim=1)

    # chunked views: (b, c, Q, h, .)
    xdt = xdt.reshape(bsz, nchunks, Q, nheads, headdim)
    Bc = Bh.reshape(bsz, nchunks, Q, nheads, dstate)
    Cc = Ch.reshape(bsz, nchunks, Q, nheads, dstate)
    a = (dt * A.to(ftype)).reshape(bsz, nchunks, Q, nheads).permute(0, 3, 1, 2)  # (b, h, c, Q)
    a_cum = a.cumsum(dim=-1)
    decay = torch.exp(segsum(a))  # (b, h, c, Q, Q): exp(Σ_{r=s+1..t} a_r)

    if seg is not None:
        segc = seg.reshape(bsz, nchunks, Q)
        same = segc.unsqueeze(-1) == segc.unsqueeze(-2)  # (b, c, Q, Q)
        decay = decay * same.unsqueeze(1)
        prev_end = torch.cat([segc[:, :1, 0], segc[:, :-1, -1]], dim=1)  # (b, c)
        carry_in = segc == prev_end.unsqueeze(-1)  # (b, c, Q): position t sees H_{c-1}
        carry_state = carry_in[:, :, -1]  # (b, c): H_{c-1} reaches H_c
    else:
        carry_in = carry_state = None

    # 1. intra-chunk outputs
    scores = torch.einsum("bclhn,bcshn->bchls", Cc, Bc) * decay.permute(0, 2, 1, 3, 4)
    y_diag = torch.einsum("bchls,bcshp->bclhp", scores, xdt)

    # 2. chunk states (decay to the chunk end = last row of the segsum matrix)
    to_end = decay[..., -1, :].permute(0, 2, 3, 1)  # (b, c, Q, h)
    chunk_states = torch.einsum("bcshn,bcshp->bchpn", Bc * to_end.unsqueeze(-1), xdt)

    # 3. inter-chunk recurrence
    chunk_decay = torch.exp(a_cum[..., -1]).permute(0, 2, 1)  # (b, c, h)
    if carry_state is not None:
        chunk_decay = chunk_decay * carry_state.unsqueeze(-1)
    state = x.new_zeros((bsz, nheads, headdim, dstate), dtype=ftype)
    if initial_states is not None:
        state = initial_states.to(ftype)
    prev_states = []
    for decay_c, states_c in zip(chunk_decay.unbind(1), chunk_states.unbind(1)):
        prev_states.append(state)
        state = decay_c[:, :, None, None] * state + states_c
    prev = torch.stack(prev_states, dim=1)  # (b, c, h, p, n): state entering each chunk

    # 4. state read-out
    in_decay = torch.exp(a_cum).permute(0, 2, 3, 1)  # (b, c, Q, h)
    if carry_in is not None:
        in_decay = in_decay * carry_in.unsqueeze(-1)
    y_off = torch.einsum("bclhn,bchpn->bclhp", Cc, prev) * in_decay.unsqueeze(-1)

    y = (y_diag + y_off).reshape(bsz, nchunks * Q, nheads, headdim)[:, :length]
    if D is not None:
        y = y + xf * (D.to(ftype).unsqueeze(-1) if D.dim() == 1 else D.to(ftype))
    if z is not None:
        y = y * F.silu(z.to(ftype))

    if cu_seqlens is None:
        return y.to(x.dtype), state
    # per-sequence final states: the state after each sequence's last position
    ends = (cu_seqlens[1:] - 1).long()
    c_idx, q_idx = ends // Q, ends % Q
    weights = decay[0][:, c_idx, q_idx, :]  # (h, S, Q)
    final = torch.einsum("hks,kshn,kshp->khpn", weights, Bc[0, c_idx], xdt[0, c_idx])
    final = final + in_decay[0, c_idx, q_idx][:, :, None, None] * prev[0, c_idx]
    return y.to(x.dtype), final
