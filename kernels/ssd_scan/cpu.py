"""Fast CPU SSD: the chunked algorithm laid out for contiguous batched matmuls.

Same math as ``reference.py`` (Dao & Gu 2024, SSD), with three changes that matter on CPU:

- tensors are kept in ``(b, c, g, r, Q, .)`` layout (chunks, B/C groups, heads per group) so that
  every contraction is a plain ``matmul`` over contiguous blocks;
- ``C Bᵀ`` is computed once per B/C group, not once per head (Mamba-2 uses one group for all
  heads, so this divides the largest matmul by the number of heads);
- the in-chunk decay ``exp(Acum_t - Acum_s)`` is taken as a difference of in-chunk cumsums (what
  the production Mamba-2 kernels do; the exponent is masked to -inf above the diagonal before the
  exp, so neither the value nor the gradient can overflow) instead of the masked-cumsum segsum,
  which needs O(Q²) cumsum passes. dt and the cumsums stay fp32, and a chunk of length Q bounds
  the cancellation.

The chunk length is ``min(chunk_size, 64, L)``: chunking changes the cost, not the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmkit.kernels.ssd_scan.reference import cu_seqlens_to_seq_idx, process_dt, segment_ids

_MAX_CHUNK = 64


def ssd_scan_cpu(
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
    """Same contract as :func:`ssmkit.kernels.ssd_scan.reference.ssd_scan_ref`."""
    bsz, length, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    rep = nheads // ngroups
    # The result does not depend on the chunk length, only the cost does: the quadratic part grows
    # with Q, so on CPU chunks of at most 64 win (and one short chunk beats padding to Q).
    Q = min(chunk_size, _MAX_CHUNK, length)
    pad = (-length) % Q
    nchunks = (length + pad) // Q

    ftype = torch.float64 if x.dtype == torch.float64 else torch.float32  # float64: gradcheck
    dt = process_dt(dt.to(ftype), dt_bias, dt_softplus, dt_limit)
    if cu_seqlens is not None:
        seq_idx = cu_seqlens_to_seq_idx(cu_seqlens, length)
    seg = segment_ids(seq_idx) if seq_idx is not None else None

    xf = x.to(ftype)
    xdt = xf * dt.unsqueeze(-1)
    Bf, Cf = B.to(ftype), C.to(ftype)
    if pad:
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        Bf = F.pad(Bf, (0, 0, 0, 0, 0, pad))
        Cf = F.pad(Cf, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        if seg is not None:
            seg = torch.cat([seg, seg[:, -1:].expand(bsz, pad)], dim=1)

    # (b, c, g, r, Q, p), (b, c, g, Q, n), (b, c, g, r, Q)
    xdt = xdt.reshape(bsz, nchunks, Q, ngroups, rep, headdim).permute(0, 1, 3, 4, 2, 5).contiguous()
    Bc = Bf.reshape(bsz, nchunks, Q, ngroups, dstate).transpose(2, 3).contiguous()
    Cc = Cf.reshape(bsz, nchunks, Q, ngroups, dstate).transpose(2, 3).contiguous()
    a = (dt * A.to(ftype)).reshape(bsz, nchunks, Q, ngroups, rep).permute(0, 1, 3, 4, 2)
    a_cum = a.cumsum(dim=-1)

    exponent = a_cum.unsqueeze(-1) - a_cum.unsqueeze(-2)  # (b, c, g, r, Q, Q): t, s
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    if seg is not None:
        segc = seg.reshape(bsz, nchunks, Q)
        allowed = causal & (segc.unsqueeze(-1) == segc.unsqueeze(-2))  # (b, c, Q, Q)
        allowed = allowed[:, :, None, None]
        prev_end = torch.cat([segc[:, :1, 0], segc[:, :-1, -1]], dim=1)
        carry_in = (segc == prev_end.unsqueeze(-1))[:, :, None, None, :]  # (b, c, 1, 1, Q)
    else:
        allowed, carry_in = causal, None
    decay = torch.exp(exponent.masked_fill(~allowed, float("-inf")))

    # 1. intra-chunk: (C Bᵀ per group) ∘ decay, times dt x
    scores = Cc @ Bc.transpose(-1, -2)  # (b, c, g, Q, Q)
    y = (scores.unsqueeze(3) * decay) @ xdt  # (b, c, g, r, Q, p)

    # 2. chunk states: Σ_s exp(Acum_Q - Acum_s) dt_s x_s ⊗ B_s
    to_end = decay[..., -1, :]  # (b, c, g, r, Q)
    chunk_states = (xdt * to_end.unsqueeze(-1)).transpose(-1, -2) @ Bc.unsqueeze(3)  # (., p, n)

    # 3. inter-chunk recurrence
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, c, g, r)
    if carry_in is not None:
        chunk_decay = chunk_decay * carry_in[..., -1]
    state = x.new_zeros((bsz, ngroups, rep, headdim, dstate), dtype=ftype)
    if initial_states is not None:
        state = initial_states.to(ftype).reshape(bsz, ngroups, rep, headdim, dstate)
    prev_states = []
    for decay_c, states_c in zip(chunk_decay.unbind(1), chunk_states.unbind(1)):
        prev_states.append(state)
        state = decay_c[..., None, None] * state + states_c
    prev = torch.stack(prev_states, dim=1)  # (b, c, g, r, p, n)

    # 4. read-out of the state entering the chunk
    in_decay = torch.exp(a_cum)  # (b, c, g, r, Q)
    if carry_in is not None:
        in_decay = in_decay * carry_in
    y = y + (Cc.unsqueeze(3) @ prev.transpose(-1, -2)) * in_decay.unsqueeze(-1)

    y = y.permute(0, 1, 4, 2, 3, 5).reshape(bsz, nchunks * Q, nheads, headdim)[:, :length]
    if D is not None:
        y = y + xf * (D.to(ftype).unsqueeze(-1) if D.dim() == 1 else D.to(ftype))
    if z is not None:
        y = y * F.silu(z.to(ftype))
    final = state.reshape(bsz, nheads, headdim, dstate)
    if cu_seqlens is None:
        return y.to(x.dtype), final

    ends = (cu_seqlens[1:] - 1).long()
    c_idx, q_idx = ends // Q, ends % Q
    weights = decay[0][c_idx, :, :, q_idx]  # (S, g, r, Q)
    per_seq = (xdt[0, c_idx] * weights.unsqueeze(-1)).transpose(-1, -2) @ Bc[0, c_idx].unsqueeze(2)
    per_seq = per_seq + in_decay[0][c_idx, :, :, q_idx][..., None, None] * prev[0, c_idx]
    return y.to(x.dtype), per_seq.reshape(-1, nheads, headdim, dstate)
