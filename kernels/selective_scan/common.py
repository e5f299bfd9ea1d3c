"""The elementwise shell shared by the fast backends around their scan core.

The fast backends implement only the core recurrence (fp32, groups folded in, resets as a 0/1
keep mask); delta bias and softplus, reversal, the D skip and the z gate are elementwise and run on
plain autograd here, identically for every backend, unless the core says it fuses them
(``fuses_delta``, ``fuses_gate``: the native CPU kernel does both).
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
    fuses_gate: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``selective_scan`` (arguments, shapes and returns as there) around a scan ``core``.

    With ``fuses_delta`` the core takes two more arguments, ``(delta_bias, delta_softplus)``, and
    applies them itself to the raw ``delta`` (then the step sizes are never materialised here).
    With ``fuses_gate`` (only together with ``fuses_delta``) it takes three more, ``(D, z,
    reverse)``, and applies the D skip, the z gate and the reversal itself (nothing is flipped
    here; z is passed in its own layout).
    """
    if fuses_gate and not fuses_delta:
        raise ValueError("scan_with_core: fuses_gate=True needs fuses_delta=True")
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
    h0 = None if initial_state is None else initial_state.to(dtype)
    D32 = None if D is None else D.to(dtype)
    z32 = None if z is None else z.to(dtype)
    if fuses_gate:
        y, last = core(u32, dt, A.to(dtype), Bg, Cg, h0, keep, *extra, D32, z32, reverse)
    else:
        y, last = gate_in_torch(
            core, u32, dt, A.to(dtype), Bg, Cg, h0, keep, extra, D32, z32, reverse
        )
    out = y.to(u.dtype).contiguous()
    return (out, last) if return_last_state else out


def gate_in_torch(
    core: ScanCore,
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None,
    keep: torch.Tensor | None,
    extra: tuple,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(core(...) + D u) * silu(z)`` on plain autograd, ``reverse`` by flipping the time axis.

    For cores that do not fuse the shell (shapes as ``ScanCore``, all in the compute dtype;
    ``extra`` is passed to the core after ``keep``). Returns ``(y, last_state)``, y (b, E, L).
    """
    if reverse:
        u, dt, B, C = u.flip(-1), dt.flip(-1), B.flip(-1), C.flip(-1)
        keep = None if keep is None else keep.flip(-1)
    y, last = core(u, dt, A, B, C, h0, keep, *extra)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z.flip(-1) if reverse else z)
    if reverse:
        y = y.flip(-1)
    return y, last
