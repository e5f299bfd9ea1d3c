"""Selective scan (S6), the reference: pure PyTorch, fp32, one time step per loop iteration.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
https://arxiv.org/abs/2312.00752, Algorithm 2 and section 3. This file is the specification the
fast backends are tested against; it reads like the paper:

    delta_t = softplus(delta_t + delta_bias)            (if delta_softplus)
    dA_t    = exp(delta_t * A)                          zero-order hold for A
    h_t     = dA_t * h_{t-1} + delta_t * B_t * u_t      Euler hold for B
    y_t     = <C_t, h_t> + D * u_t,   y *= silu(z)

The backward is linear in L: the time loop walks over ``unbind`` slices, never ``x[:, t]``
indexing (whose backward allocates a full-size zero gradient per step, O(L^2)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 inputs, fp64 for fp64 inputs (so gradcheck can run in fp64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def per_channel(bc: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """Expand shared (b, N, L) or grouped (b, G, N, L) B/C to one row per channel.

    Group g serves channels [g * E/G, (g + 1) * E/G).

    Returns:
        (b, E, L, N) tensor in ``dtype``.
    """
    if bc.dim() == 3:
        bc = bc.unsqueeze(1)
    groups = bc.shape[1]
    return bc.to(dtype).repeat_interleave(channels // groups, dim=1).transpose(-1, -2)


def selective_scan_reference(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan, sequential over time (inputs are assumed validated).

    Args:
        u: input (b, E, L).
        delta: step sizes before bias/softplus (b, E, L).
        A: state matrix, real (E, N) (negative for a decaying state).
        B: input projection (b, N, L) shared, or (b, G, N, L) grouped with E % G == 0.
        C: output projection, same layouts as ``B``.
        D: skip connection (E,).
        z: gate (b, E, L); the output is multiplied by silu(z).
        delta_bias: added to ``delta`` (E,) before the softplus.
        delta_softplus: apply softplus (threshold 20) to ``delta``.
        return_last_state: also return the final state.
        initial_state: h before the first step (b, E, N); zeros when None.
        reverse: scan t = L-1 .. 0; the last state is then the state after t = 0.
        resets: (b, L) bool; where set, the state restarts (h_{t-1} := 0, so h_t = dB_t u_t).

    Returns:
        y (b, E, L) in u's dtype, and with ``return_last_state`` the final state (b, E, N) in
        fp32 (fp64 for fp64 inputs).
    """
    dtype = compute_dtype(u.dtype)
    batch, channels, _ = u.shape
    n_state = A.shape[1]
    u32 = u.to(dtype)
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)  # log1p(exp(x)) for x <= 20, else x, as in mamba_ssm
    Bc = per_channel(B, channels, dtype)  # (b, E, L, N)
    Cc = per_channel(C, channels, dtype)
    keep = None if resets is None else (~resets).to(dtype)  # (b, L)
    if reverse:
        u32, dt, Bc, Cc = u32.flip(-1), dt.flip(-1), Bc.flip(-2), Cc.flip(-2)
        keep = None if keep is None else keep.flip(-1)

    # (b, E, L, N)
    decay = torch.exp(dt[..., None] * A.to(dtype)[:, None, :])
    drive = (dt * u32)[..., None] * Bc
    if keep is not None:
        decay = decay * keep[:, None, :, None]

    if initial_state is None:
        h = u32.new_zeros(batch, channels, n_state)
    else:
        h = initial_state.to(dtype)
    states = []
    for decay_t, drive_t in zip(decay.unbind(2), drive.unbind(2)):
        h = decay_t * h + drive_t
        states.append(h)
    y = (torch.stack(states, dim=2) * Cc).sum(-1)  # (b, E, L)

    if D is not None:
        y = y + D.to(dtype)[:, None] * u32
    if z is not None:
        zz = z.to(dtype)
        y = y * F.silu(zz.flip(-1) if reverse else zz)
    if reverse:
        y = y.flip(-1)
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out
