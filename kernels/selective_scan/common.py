"""The elementwise shell shared by the fast backends around their scan core.

The fast backends implement only the core recurrence (fp32, groups folded in, resets as a 0/1
keep mask); delta bias and softplus, reversal, the D skip and the z gate are elementwise and run on
plain autograd here, identically for every backend.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssmkit.kernels.selective_scan.reference import compute_dtype

# core(u, dt, A, B, C, h0, keep[, delta_bias, delta_softplus]) -> (y, last_state):
# u, dt (b, E, L); A (E, N); B, C (b, G, N, L); h0 (b, E, N) or None; keep (b, L) or None.
ScanCore = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def scan_with_core(
    core: ScanCore,
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
    fuses_delta: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``selective_scan`` (arguments, shapes and returns as there) around a scan ``core``.

    With ``fuses_delta`` the core takes two more arguments, ``(delta_bias, delta_softplus)``, and
    applies them itself to the raw ``delta`` (then the step sizes are never materialised here).
    """
    dtype = compute_dtype(u.dtype)
    u32 = u.to(dtype)
    dt = delta.to(dtype)
    extra: tuple = ()
    if fuses_delta:
        extra = (None if delta_bias is None else delta_bias.to(dtype), delta_softplus)
    else:
        if delta_bias is not None:
            dt = dt + delta_bias.to(dtype)[:, None]
        if delta_softplus:
            dt = F.softplus(dt)  # threshold 20, as mamba_ssm
    Bg = (B if B.dim() == 4 else B.unsqueeze(1)).to(dtype)
    Cg = (C if C.dim() == 4 else C.unsqueeze(1)).to(dtype)
    keep = None if resets is None else (~resets).to(dtype)
    if reverse:
        u32, dt, Bg, Cg = u32.flip(-1), dt.flip(-1), Bg.flip(-1), Cg.flip(-1)
        keep = None if keep is None else keep.flip(-1)
    h0 = None if initial_state is None else initial_state.to(dtype)

    y, last = core(u32, dt, A.to(dtype), Bg, Cg, h0, keep, *extra)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u32
    if z is not None:
        zz = z.to(dtype)
        y = y * F.silu(zz.flip(-1) if reverse else zz)
    if reverse:
        y = y.flip(-1)
    out = y.to(u.dtype).contiguous()
    return (out, last) if return_last_state else out
