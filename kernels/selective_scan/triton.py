"""Selective scan, Triton backend: time processed T steps at a time with associative scans.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
https://arxiv.org/abs/2312.00752. Same math as ``reference.py``:

    h_t = keep_t exp(dt_t A) h_{t-1} + dt_t u_t B_t,    y_t = <C_t, h_t>

One program owns a block of BLOCK_E channels of one batch row (their (BLOCK_E, N) state lives in
registers) and cuts time into tiles of T steps. (The first version walked time one step at a
time, loading one strided element per channel and step: latency-bound. On an H100 this tiled
version is 3.8-17x faster forward+backward; ``benchmarks/results/scan_gpu.md``.)

- Forward, per tile: u, dt are loaded as (BLOCK_E, T) tiles and B, C as (N, T) tiles (or
  (BLOCK_E, N, T) when the channel block straddles two groups), all contiguous along t, i.e.
  coalesced. Each step is the affine map h -> a_t h + b_t with a_t = keep_t exp(dt_t A) and
  b_t = dt_t u_t B_t; the maps of the tile are composed with ``tl.associative_scan`` along the
  time axis (combine ``(a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2)``), which gives every state of
  the tile at once, ``h_t = b*_t + a*_t h_start`` (starred: the scanned pairs, i.e. the maps
  from the tile start to step t). ``y`` is the sum over N of ``h C``; the tile's last state
  (its last column) is carried to the next tile.
  The state at every multiple of STATE_T steps (the smallest tile length of the autotuner's
  configs) is stored for the backward, so the two kernels may pick different tile lengths.
- Backward, tiles in reverse: the states before each step, h_{t-1}, are an exclusive scan from
  the stored tile-start state, computed as an inclusive scan of the inputs loaded one step
  earlier with the identity ``(1, 0)`` in front (no division by the decay, which can underflow
  to 0); ``h_t = a_t h_{t-1} + b_t``. The adjoint ``g_t = dy_t C_t + a_{t+1} g_{t+1}`` is a
  reverse associative scan of the pairs ``(a_{t+1}, dy_t C_t)`` (inputs loaded one step later),
  seeded at the tile's last step with the carry ``a_{t+1} g_{t+1}`` from the next tile (``dlast``
  for the last tile). Then, per step:
  ``du = dt sum_n g B``, ``ddt = u sum_n g B + sum_n g a h_{t-1} A``,
  ``dA += sum_t g a h_{t-1} dt``, ``dB_t = sum_e g dt u``, ``dC_t = sum_e dy h_t``;
  the grouped ``dB``, ``dC`` are reduced over the block's channels in registers and added to
  memory with one atomic add per (N, T) tile (per channel when the block straddles two groups).
  ``dh0`` is the carry left after the first tile, ``a_0 g_0``.

Steps past L are padded with the identity (decay 1, input 0), so a tile never needs a partial
scan. Imported only when chosen (never by ``import ssmkit.kernels``); runs under
``TRITON_INTERPRET=1`` on CPU tensors, where one small configuration (T = 16) is used.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ssmkit.kernels._dispatch import device_guard, triton_interpreted
from ssmkit.kernels.selective_scan.common import scan_with_core

# (BLOCK_E, T, num_warps) tried by the autotuner on a GPU, pruned by register pressure below
_GPU_CONFIGS = [
    (block_e, tile, warps) for tile in (32, 64) for block_e in (4, 8, 16) for warps in (4, 8)
]
# Register budget: fp32 elements of one (BLOCK_E, BLOCK_N, T) tile per thread. Calibrated on sm_90
# PTX (ptxas -v, N = 16): at most 32 compiles without spills in the forward; the backward (more
# tiles alive, two scans) needs half that at T = 64, and blocks straddling two groups of B/C (full
# (BLOCK_E, BLOCK_N, T) B and C tiles) need half again (a quarter in the backward).
_MAX_PER_THREAD = 32


def _configs() -> list[triton.Config]:
    # The interpreter cannot benchmark several configs (no GPU driver): exactly one there.
    if triton_interpreted():
        return [triton.Config({"BLOCK_E": 4, "T": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_E": block_e, "T": tile}, num_warps=warps)
        for block_e, tile, warps in _GPU_CONFIGS
    ]


def _state_stride() -> int:
    """Steps between two stored states: the smallest tile length, which divides every other."""
    tiles = [c.kwargs["T"] for c in _configs()]
    stride = min(tiles)
    assert all(tile % stride == 0 for tile in tiles)
    return stride


def _one_group(args: dict) -> bool:
    # every channel block lies in one group of B/C: load (N, T) tiles, reduce dB/dC in registers
    return args["G"] == 1 or args["PER_GROUP"] % args["BLOCK_E"] == 0


def _prune(
    configs: list[triton.Config], named_args: dict, backward: bool, **kwargs: Any
) -> list[triton.Config]:
    """The configs within the register budget, preferring blocks inside one group and no wider
    than the channels; never empty (the cheapest config when none fits)."""
    block_n = kwargs["BLOCK_N"]

    def one_group(c: triton.Config) -> bool:
        return _one_group({**named_args, **c.kwargs})

    def cost(c: triton.Config) -> float:
        per_thread = c.kwargs["BLOCK_E"] * block_n * c.kwargs["T"] / (32 * c.num_warps)
        if backward:
            per_thread *= c.kwargs["T"] / 32
        if not one_group(c):
            per_thread *= 4 if backward else 2
        return per_thread

    kept = [c for c in configs if cost(c) <= _MAX_PER_THREAD]
    for prefer in (one_group, lambda c: c.kwargs["BLOCK_E"] <= named_args["E"]):
        if any(prefer(c) for c in kept):
            kept = [c for c in kept if prefer(c)]
    return kept or [min(configs, key=cost)]


def _prune_forward(configs: list[triton.Config], named_args: dict, **kwargs: Any) -> list:
    return _prune(configs, named_args, False, **kwargs)


def _prune_backward(configs: list[triton.Config], named_args: dict, **kwargs: Any) -> list:
    return _prune(configs, named_args, True, **kwargs)


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) is the earlier map h -> a1 h + b1; the result applies it first, then (a2, b2)
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _load_bc(ptr, bc_row, tt, mask_bc, mask_t, ONE_GROUP: tl.constexpr):
    """B or C at steps ``tt`` (T,): (1, BLOCK_N, T) if ONE_GROUP (bc_row (BLOCK_N,)), else
    (BLOCK_E, BLOCK_N, T) (bc_row (BLOCK_E, BLOCK_N)); 0 where masked."""
    if ONE_GROUP:
        tile = tl.load(
            ptr + bc_row[:, None] + tt[None, :],
            mask=mask_bc[:, None] & mask_t[None, :],
            other=0.0,
        )
        out = tile[None, :, :]
    else:
        out = tl.load(
            ptr + bc_row[:, :, None] + tt[None, None, :],
            mask=mask_bc[:, :, None] & mask_t[None, None, :],
            other=0.0,
        )
    return out


@triton.jit
def _add_bc(ptr, value, bc_row, tt, mask_bc, mask_t, ONE_GROUP: tl.constexpr):
    """Atomically add ``value`` (BLOCK_E, BLOCK_N, T) to dB or dC at steps ``tt``: summed over the
    block's channels first if ONE_GROUP (bc_row (BLOCK_N,)), else per channel (bc_row
    (BLOCK_E, BLOCK_N))."""
    if ONE_GROUP:
        tl.atomic_add(
            ptr + bc_row[:, None] + tt[None, :],
            tl.sum(value, axis=0),
            mask=mask_bc[:, None] & mask_t[None, :],
        )
    else:
        tl.atomic_add(
            ptr + bc_row[:, :, None] + tt[None, None, :],
            value,
            mask=mask_bc[:, :, None] & mask_t[None, None, :],
        )


@triton.jit
def _decay(dt, A, keep_ptr, keep_row, tt, mask_t, HAS_KEEP: tl.constexpr):
    """keep_t exp(dt_t A) as (BLOCK_E, BLOCK_N, T) from dt (BLOCK_E, T) and A (BLOCK_E, BLOCK_N);
    1 where dt and keep are masked (dt loaded as 0)."""
    decay = tl.exp(dt[:, None, :] * A[:, :, None])
    if HAS_KEEP:
        keep = tl.load(keep_ptr + keep_row + tt, mask=mask_t, other=1.0)
        decay = decay * keep[None, None, :]
    return decay


@triton.jit
def _program_layout(
    A_ptr,
    E,
    N,
    L,
    G,
    PER_GROUP,
    N_STATES,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
    T: tl.constexpr,
    ONE_GROUP: tl.constexpr,
):
    """This program's channels, masks, offsets and A (shared by the forward and backward).

    Returns pid_b (int64: offsets past 2**31 elements at long L), e (BLOCK_E,), t (T,), mask_e,
    mask_en (BLOCK_E, BLOCK_N), state_offsets into an (E, N) slab, A (BLOCK_E, BLOCK_N), row
    (BLOCK_E,) start of each channel's time series, keep_row, bc_row with mask_bc (B/C rows:
    (BLOCK_N,) if ONE_GROUP else (BLOCK_E, BLOCK_N)) and state_row (the batch row's first stored
    state in the (B, N_STATES, E, N) buffer).
    """
    pid_b = tl.program_id(0).to(tl.int64)
    pid_e = tl.program_id(1)
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    t = tl.arange(0, T)
    mask_e = e < E
    mask_n = n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    state_offsets = e[:, None] * N + n[None, :]
    A = tl.load(A_ptr + state_offsets, mask=mask_en, other=0.0)
    row = (pid_b * E + e) * L
    if ONE_GROUP:
        group = (pid_e * BLOCK_E) // PER_GROUP
        bc_row = ((pid_b * G + group) * N + n) * L
        mask_bc = mask_n
    else:
        bc_row = ((pid_b * G + e // PER_GROUP)[:, None] * N + n[None, :]) * L
        mask_bc = mask_en
    return (
        pid_b, e, t, mask_e, mask_en, state_offsets, A, row, pid_b * L, bc_row, mask_bc,
        pid_b * N_STATES,
    )  # fmt: skip


@triton.autotune(
    configs=_configs(),
    key=["E", "N", "G", "L_BUCKET"],
    prune_configs_by={"early_config_prune": _prune_forward},
)
@triton.heuristics({"ONE_GROUP": _one_group})
@triton.jit
def _forward_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    h0_ptr,
    keep_ptr,
    y_ptr,
    last_ptr,
    states_ptr,
    E,
    N,
    L,
    G,
    PER_GROUP,
    N_STATES,
    L_BUCKET,
    HAS_H0: tl.constexpr,
    HAS_KEEP: tl.constexpr,
    STATE_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
    T: tl.constexpr,
    ONE_GROUP: tl.constexpr,
):
    pid_b, e, t, mask_e, mask_en, state_offsets, A, row, keep_row, bc_row, mask_bc, state_row = (
        _program_layout(A_ptr, E, N, L, G, PER_GROUP, N_STATES, BLOCK_N, BLOCK_E, T, ONE_GROUP)
    )
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * E * N + state_offsets, mask=mask_en, other=0.0)
    else:
        h = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for start in range(0, L, T):
        tt = start + t
        mask_t = tt < L
        mask_et = mask_e[:, None] & mask_t[None, :]
        tl.store(
            states_ptr + (state_row + start // STATE_T) * E * N + state_offsets, h, mask=mask_en
        )
        u = tl.load(u_ptr + row[:, None] + tt[None, :], mask=mask_et, other=0.0)
        dt = tl.load(dt_ptr + row[:, None] + tt[None, :], mask=mask_et, other=0.0)
        decay = _decay(dt, A, keep_ptr, keep_row, tt, mask_t, HAS_KEEP)
        x = (dt * u)[:, None, :] * _load_bc(B_ptr, bc_row, tt, mask_bc, mask_t, ONE_GROUP)
        a_scan, b_scan = tl.associative_scan((decay, x), axis=2, combine_fn=_combine)
        hs = b_scan + a_scan * h[:, :, None]  # (BLOCK_E, BLOCK_N, T): h_t for the tile
        C = _load_bc(C_ptr, bc_row, tt, mask_bc, mask_t, ONE_GROUP)
        tl.store(y_ptr + row[:, None] + tt[None, :], tl.sum(hs * C, axis=1), mask=mask_et)
        for k in tl.static_range(1, T // STATE_T):
            # states inside the tile, for a backward running shorter tiles
            h_k = tl.sum(tl.where(t[None, None, :] == k * STATE_T - 1, hs, 0.0), axis=2)
            stored = mask_en & (start + k * STATE_T < L)
            offsets = (state_row + start // STATE_T + k) * E * N + state_offsets
            tl.store(states_ptr + offsets, h_k, mask=stored)
        # padded steps are the identity, so the last column is the state after step L - 1
        h = tl.sum(tl.where(t[None, None, :] == T - 1, hs, 0.0), axis=2)
    tl.store(last_ptr + pid_b * E * N + state_offsets, h, mask=mask_en)


@triton.autotune(
    configs=_configs(),
    key=["E", "N", "G", "L_BUCKET"],
    prune_configs_by={"early_config_prune": _prune_backward},
    reset_to_zero=["dB_ptr", "dC_ptr"],
)
@triton.heuristics({"ONE_GROUP": _one_group})
@triton.jit
def _backward_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    keep_ptr,
    states_ptr,
    dy_ptr,
    dlast_ptr,
    du_ptr,
    ddt_ptr,
    dA_ptr,
    dB_ptr,
    dC_ptr,
    dh0_ptr,
    E,
    N,
    L,
    G,
    PER_GROUP,
    N_STATES,
    L_BUCKET,
    HAS_KEEP: tl.constexpr,
    STATE_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
    T: tl.constexpr,
    ONE_GROUP: tl.constexpr,
):
    pid_b, e, t, mask_e, mask_en, state_offsets, A, row, keep_row, bc_row, mask_bc, state_row = (
        _program_layout(A_ptr, E, N, L, G, PER_GROUP, N_STATES, BLOCK_N, BLOCK_E, T, ONE_GROUP)
    )
    # carry: gradient reaching the state before the current tile's successor, a_{t+1} g_{t+1}
    carry = tl.load(dlast_ptr + pid_b * E * N + state_offsets, mask=mask_en, other=0.0)
    dA = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    last_start = ((L - 1) // T) * T
    for back in range(0, L, T):
        start = last_start - back
        tt = start + t
        mask_t = tt < L
        mask_et = mask_e[:, None] & mask_t[None, :]
        h_start = tl.load(
            states_ptr + (state_row + start // STATE_T) * E * N + state_offsets,
            mask=mask_en,
            other=0.0,
        )

        # h_{t-1}: inclusive scan of the maps of steps t - 1, the identity in front (t = 0)
        tp = tt - 1
        mask_tp = (t >= 1) & (tp < L)
        mask_etp = mask_e[:, None] & mask_tp[None, :]
        u_p = tl.load(u_ptr + row[:, None] + tp[None, :], mask=mask_etp, other=0.0)
        dt_p = tl.load(dt_ptr + row[:, None] + tp[None, :], mask=mask_etp, other=0.0)
        decay_p = _decay(dt_p, A, keep_ptr, keep_row, tp, mask_tp, HAS_KEEP)
        x_p = (dt_p * u_p)[:, None, :] * _load_bc(B_ptr, bc_row, tp, mask_bc, mask_tp, ONE_GROUP)
        a_scan, b_scan = tl.associative_scan((decay_p, x_p), axis=2, combine_fn=_combine)
        h_prev = b_scan + a_scan * h_start[:, :, None]  # (BLOCK_E, BLOCK_N, T)

        # this step's map and state; dC_t = sum_e dy_t h_t (ordered to keep few tiles alive)
        u = tl.load(u_ptr + row[:, None] + tt[None, :], mask=mask_et, other=0.0)
        dt = tl.load(dt_ptr + row[:, None] + tt[None, :], mask=mask_et, other=0.0)
        dy = tl.load(dy_ptr + row[:, None] + tt[None, :], mask=mask_et, other=0.0)
        decay = _decay(dt, A, keep_ptr, keep_row, tt, mask_t, HAS_KEEP)
        B = _load_bc(B_ptr, bc_row, tt, mask_bc, mask_t, ONE_GROUP)
        dtu = dt * u
        w = decay * h_prev  # a_t h_{t-1}
        h = w + dtu[:, None, :] * B
        _add_bc(dC_ptr, dy[:, None, :] * h, bc_row, tt, mask_bc, mask_t, ONE_GROUP)
        decay_0 = tl.sum(tl.where(t[None, None, :] == 0, decay, 0.0), axis=2)  # a at the start

        # adjoint g_t = dy_t C_t + a_{t+1} g_{t+1}: reverse scan of (a_{t+1}, dy_t C_t); the next
        # tile's contribution enters at the last step (a_{t+1} of the last step is never used)
        tn = tt + 1
        mask_tn = (t + 1 < T) & (tn < L)
        dt_n = tl.load(
            dt_ptr + row[:, None] + tn[None, :], mask=mask_e[:, None] & mask_tn[None, :], other=0.0
        )
        decay_n = _decay(dt_n, A, keep_ptr, keep_row, tn, mask_tn, HAS_KEEP)
        C = _load_bc(C_ptr, bc_row, tt, mask_bc, mask_t, ONE_GROUP)
        r = dy[:, None, :] * C + tl.where(t[None, None, :] == T - 1, carry[:, :, None], 0.0)
        _, g = tl.associative_scan((decay_n, r), axis=2, combine_fn=_combine, reverse=True)

        # dB_t = sum_e g_t dt_t u_t; du, ddt, dA through s = sum_n g B and q = g a h_{t-1}
        _add_bc(dB_ptr, g * dtu[:, None, :], bc_row, tt, mask_bc, mask_t, ONE_GROUP)
        s = tl.sum(g * B, axis=1)  # (BLOCK_E, T)
        q = g * w  # d loss / d a_t, times a_t
        dA += tl.sum(q * dt[:, None, :], axis=2)
        ddt = s * u + tl.sum(q * A[:, :, None], axis=1)
        tl.store(ddt_ptr + row[:, None] + tt[None, :], ddt, mask=mask_et)
        tl.store(du_ptr + row[:, None] + tt[None, :], s * dt, mask=mask_et)
        carry = decay_0 * tl.sum(tl.where(t[None, None, :] == 0, g, 0.0), axis=2)
    tl.store(dA_ptr + pid_b * E * N + state_offsets, dA, mask=mask_en)
    tl.store(dh0_ptr + pid_b * E * N + state_offsets, carry, mask=mask_en)


def _length_bucket(length: int) -> int:
    # autotuning key: lengths within a factor of two share their tuned config
    return triton.next_power_of_2(length)


class _SelectiveScanTriton(torch.autograd.Function):
    """Core scan on Triton, tiled over time.

    h_t = keep_t exp(dt_t A) h_{t-1} + dt_t u_t B_t, y_t = <C_t, h_t>; u, dt (B, E, L); A (E, N);
    B, C (B, G, N, L); h0 (B, E, N) or None; keep (B, L) or None. Returns y (B, E, L) and the last
    state (B, E, N); the backward returns du, ddt, dA (E, N), dB, dC, dh0 (or None) and None.
    """

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        dt: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        h0: torch.Tensor | None,
        keep: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u, dt, A, B, C = (t.contiguous() for t in (u, dt, A, B, C))
        h0 = None if h0 is None else h0.contiguous()
        keep = None if keep is None else keep.contiguous()
        batch, channels, length = u.shape
        groups, n_state = B.shape[1], A.shape[1]
        stride = _state_stride()
        n_states = triton.cdiv(length, stride)
        y = torch.empty_like(u)
        last = torch.empty(batch, channels, n_state, dtype=u.dtype, device=u.device)
        # (B, L / STATE_T, E, N): the state before steps 0, STATE_T, 2 STATE_T, ...
        states = torch.empty(batch, n_states, channels, n_state, dtype=u.dtype, device=u.device)
        with device_guard(u):
            _forward_kernel[lambda meta: (batch, triton.cdiv(channels, meta["BLOCK_E"]))](
                u,
                dt,
                A,
                B,
                C,
                u if h0 is None else h0,
                u if keep is None else keep,
                y,
                last,
                states,
                channels,
                n_state,
                length,
                groups,
                channels // groups,
                n_states,
                _length_bucket(length),
                HAS_H0=h0 is not None,
                HAS_KEEP=keep is not None,
                STATE_T=stride,
                BLOCK_N=triton.next_power_of_2(n_state),
            )
        ctx.save_for_backward(u, dt, A, B, C, keep, states)
        ctx.has_h0 = h0 is not None
        ctx.stride = stride
        return y, last

    @staticmethod
    def backward(
        ctx: Any, dy: torch.Tensor, dlast: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        u, dt, A, B, C, keep, states = ctx.saved_tensors
        batch, channels, length = u.shape
        groups, n_state = B.shape[1], A.shape[1]
        dy = dy.contiguous().float()
        dlast = dlast.contiguous().float()
        du, ddt = torch.empty_like(u), torch.empty_like(dt)
        dA = torch.empty(batch, channels, n_state, dtype=u.dtype, device=u.device)
        dB, dC = torch.zeros_like(B), torch.zeros_like(C)
        dh0 = torch.empty(batch, channels, n_state, dtype=u.dtype, device=u.device)
        with device_guard(u):
            _backward_kernel[lambda meta: (batch, triton.cdiv(channels, meta["BLOCK_E"]))](
                u,
                dt,
                A,
                B,
                C,
                u if keep is None else keep,
                states,
                dy,
                dlast,
                du,
                ddt,
                dA,
                dB,
                dC,
                dh0,
                channels,
                n_state,
                length,
                groups,
                channels // groups,
                states.shape[1],
                _length_bucket(length),
                HAS_KEEP=keep is not None,
                STATE_T=ctx.stride,
                BLOCK_N=triton.next_power_of_2(n_state),
            )
        return du, ddt, dA.sum(0), dB, dC, dh0 if ctx.has_h0 else None, None


def _core(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None,
    keep: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _SelectiveScanTriton.apply(u, dt, A, B, C, h0, keep)


def selective_scan_triton(
    *args: Any, **kwargs: Any
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton selective scan (tiled over time); arguments, shapes and returns as ``selective_scan``."""
    return scan_with_core(_core, *args, **kwargs)
