"""Mamba-1: the selective state-space (S6) mixer.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (2023),
https://arxiv.org/abs/2312.00752. Parameter names and inits follow the authors' ``mamba_ssm``
module, so their checkpoints load 1:1 (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``,
``D``, ``out_proj``).

The functional pieces here (:func:`causal_conv1d`, :func:`selective_ssm`, the init helpers) are
shared with :mod:`ssmkit.core.bimamba`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import ops
from ssmkit.core.registry import register_model
from ssmkit.core.state import (
    ConvSSMState,
    check_sequence_inputs,
    check_state,
    check_step_input,
)
from ssmkit.kernels._dispatch import resolve_backend
from ssmkit.kernels.selective_scan import fused_available, mamba_inner_inference

__all__ = [
    "Mamba",
    "anticausal_conv1d",
    "causal_conv1d",
    "channels_first_in_proj",
    "conv_silu",
    "selective_ssm",
]


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    prefix: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise convolution that can continue a sequence, skip pads and restart episodes.

    ``y_t = bias + sum_s w[K-1-s] * x_{t-s}``, where ``x_{t-s}`` is the ``s``-th most recent *real*
    input (pads, ``mask`` False, are skipped; before the sequence come the ``prefix`` inputs, or
    zeros) and inputs of an earlier episode (before a reset) count as zero.

    Args:
        x: ``(B, C, L)``.
        weight: ``(C, 1, K)`` depthwise kernel (``nn.Conv1d`` layout).
        bias: ``(C,)`` or ``None``.
        prefix: ``(B, C, K - 1)`` the previous ``K - 1`` inputs (a :class:`ConvSSMState`'s conv).
        mask: ``(B, L)`` bool, True = real token.
        resets: ``(B, L)`` bool, True where an episode starts.

    Returns:
        ``y (B, C, L)`` (pre-activation; pad positions hold junk that callers zero) and the new
        prefix ``(B, C, K - 1)``: the last ``K - 1`` real inputs of the current episode.
    """
    batch, channels, length = x.shape
    k = weight.shape[-1]
    if mask is not None:
        x = x * mask[:, None, :].to(x.dtype)
    if prefix is None and mask is None and resets is None and length >= k - 1:
        # the common training case: zero history, no concatenated copy of x
        y = F.conv1d(
            x,
            weight.to(x.dtype),
            None if bias is None else bias.to(x.dtype),
            padding=k - 1,
            groups=channels,
        )
        return y[..., :length], x[..., length - (k - 1) :]
    if prefix is None:
        prefix = x.new_zeros(batch, channels, k - 1)
    full = torch.cat([prefix.to(x.dtype), x], dim=-1)  # (B, C, K-1+L)
    if mask is None and resets is None:
        y = F.conv1d(
            full, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), groups=channels
        )
        return y, full[..., full.shape[-1] - (k - 1) :]

    total = full.shape[-1]
    ones = torch.ones(batch, k - 1, dtype=torch.bool, device=x.device)
    real = torch.cat(
        [ones, mask if mask is not None else torch.ones_like(ones[:, :1]).expand(batch, length)], -1
    )
    episode = torch.zeros(batch, total, dtype=torch.long, device=x.device)
    if resets is not None:
        episode[:, k - 1 :] = resets.long().cumsum(-1)
    # rank of each real input, and the position holding each rank (slot `total` collects pads)
    rank = real.long().cumsum(-1) - 1
    slot = torch.where(real, rank, torch.full_like(rank, total))
    positions = torch.arange(total, device=x.device).expand(batch, total)
    pos_of_rank = torch.zeros(batch, total + 1, dtype=torch.long, device=x.device)
    pos_of_rank = pos_of_rank.scatter(1, slot, positions)

    w = weight.reshape(channels, k).to(x.dtype)
    out_rank = rank[:, k - 1 :]  # (B, L): rank of the newest real input at or before t
    out_episode = episode[:, k - 1 :]
    y = (
        x.new_zeros(batch, channels, length)
        if bias is None
        else bias.to(x.dtype)[None, :, None].expand(batch, channels, length)
    )
    for s in range(k):
        src = pos_of_rank.gather(1, (out_rank - s).clamp_min(0))
        tap = full.gather(2, src[:, None, :].expand(batch, channels, length))
        if resets is not None:
            tap = tap * (episode.gather(1, src) == out_episode)[:, None, :].to(x.dtype)
        y = y + w[:, k - 1 - s, None] * tap

    last_rank = rank[:, -1:]  # (B, 1)
    offsets = (
        torch.arange(-(k - 2), 1, device=x.device)
        if k > 1
        else torch.zeros(0, dtype=torch.long, device=x.device)
    )
    src = pos_of_rank.gather(1, (last_rank + offsets).clamp_min(0))  # (B, K-1)
    new_prefix = full.gather(2, src[:, None, :].expand(batch, channels, k - 1))
    if resets is not None:
        same = episode.gather(1, src) == episode[:, -1:]
        new_prefix = new_prefix * same[:, None, :].to(x.dtype)
    return y, new_prefix


def channels_first_in_proj(
    in_proj: nn.Linear, x: torch.Tensor, d_inner: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``in_proj`` as two products ``W_x x^T`` and ``W_z x^T``: ``(B, L, D)`` -> x and z, each a
    contiguous ``(B, E, L)`` (what the conv and the scan read best; one ``(B, L, 2E)`` output would
    reach them as strided views)."""
    weight = in_proj.weight
    bias = in_proj.bias
    xt = x.transpose(1, 2)  # (B, D, L) view
    parts = []
    for rows in (slice(0, d_inner), slice(d_inner, 2 * d_inner)):
        part = torch.matmul(weight[rows], xt)
        parts.append(part if bias is None else part + bias[rows, None].to(part.dtype))
    return parts[0], parts[1]


def anticausal_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The causal depthwise conv of the reversed sequence, in the original order, without flips.

    ``y_t = bias + sum_s w[K-1-s] * x_{t+s}`` (zeros after the end), i.e.
    ``causal_conv1d(x.flip(-1), weight, bias)[0].flip(-1)``: the backward direction of a
    bidirectional mixer.

    Args:
        x: ``(B, C, L)``. weight: ``(C, 1, K)``. bias: ``(C,)`` or ``None``.

    Returns:
        ``(B, C, L)``, pre-activation.
    """
    k = weight.shape[-1]
    y = F.conv1d(
        x,
        weight.flip(-1).to(x.dtype),
        None if bias is None else bias.to(x.dtype),
        padding=k - 1,
        groups=x.shape[1],
    )
    return y[..., k - 1 :]


def conv_silu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, reverse: bool = False
) -> torch.Tensor:
    """``silu(causal conv)`` from zero history (or ``silu(anticausal_conv1d)`` with ``reverse``):
    the conv and activation of every training forward (no prefix, mask or resets).

    Runs ``ops.depthwise_causal_conv1d`` with the fused SiLU: on CPU fp32 a native kernel with its
    own backward (mkldnn's depthwise conv backward is slow at Mamba's shapes), elsewhere (CUDA,
    other dtypes, autocast) ``F.conv1d`` + ``F.silu``; inside a ``torch.compile`` trace the plain
    ``F.conv1d`` path, so the graph keeps it.

    Args:
        x: ``(B, C, L)``. weight: ``(C, 1, K)``. bias: ``(C,)`` or ``None``.
        reverse: the anti-causal conv (the backward direction of a bidirectional mixer).

    Returns:
        ``(B, C, L)``, post-activation.
    """
    if torch.compiler.is_compiling():
        if reverse:
            return F.silu(anticausal_conv1d(x, weight, bias))
        return F.silu(causal_conv1d(x, weight, bias)[0])
    return ops.depthwise_causal_conv1d(x, weight, bias, activation="silu", reverse=reverse)


def conv_prefix(x: torch.Tensor, k: int) -> torch.Tensor:
    """The last ``k - 1`` inputs of ``x (B, C, L)`` after zero history: ``(B, C, k - 1)``, the
    conv window :func:`causal_conv1d` returns for a sequence started from zeros."""
    pad = max(0, k - 1 - x.shape[-1])
    full = F.pad(x, (pad, 0)) if pad else x
    return full[..., full.shape[-1] - (k - 1) :]


@torch.compiler.disable
def _selective_scan(*args: Any, **kwargs: Any) -> Any:
    """``ops.selective_scan`` kept out of ``torch.compile`` graphs (a graph break, run eagerly).

    The CPU backends drive native code through ctypes and a thread pool and the GPU backend is an
    ``autograd.Function`` around Triton kernels; Dynamo cannot trace the former and recompiles the
    latter per shape. Everything around the scan (projections, conv, norms) still compiles.
    """
    return ops.selective_scan(*args, **kwargs)


def can_fuse(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``module``'s forward on ``x`` may take the fused inference path.

    That path (:func:`fused_inner`) runs conv, dt projection, softplus, scan, skip and gate in
    native passes over the time-major ``in_proj`` output, with no transposes and no autograd. It
    needs CPU fp32 tensors, no gradient being recorded, no autocast, no ``torch.compile`` trace,
    the selective scan resolving to the ``cpu`` backend, and the native kernels built.
    """
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    if resolve_backend("selective_scan", "auto", x.device) != "cpu":
        return False
    return fused_available(x, *module.parameters())


class _Workspace(threading.local):
    buffer: torch.Tensor | None = None
    busy: bool = False


_WORKSPACE = _Workspace()
_WORKSPACE_MAX = 1 << 26  # floats (256 MiB): larger requests get a fresh tensor


@contextlib.contextmanager
def inference_workspace(numel: int) -> Iterator[torch.Tensor]:
    """A flat fp32 CPU scratch tensor of ``numel`` elements for the fused inference path.

    One buffer per thread, kept between calls and grown to the largest request, so a stack of
    mixers reuses the same memory for ``in_proj``'s output and the ``out_proj`` input instead of
    allocating (and page-faulting) two large tensors per layer. Nothing returned to the caller
    aliases it. Nested use, or requests over 256 MiB, get a fresh tensor. Free it with
    :func:`release_inference_workspace`.
    """
    ws = _WORKSPACE
    if ws.busy or numel > _WORKSPACE_MAX:
        yield torch.empty(numel)
        return
    if ws.buffer is None or ws.buffer.numel() < numel:
        ws.buffer = None
        with torch.inference_mode(False):  # a normal tensor: usable in and out of inference mode
            ws.buffer = torch.empty(numel)
    ws.busy = True
    try:
        yield ws.buffer[:numel]
    finally:
        ws.busy = False


def release_inference_workspace() -> None:
    """Free this thread's fused-inference scratch buffer (it is re-created when next needed)."""
    _WORKSPACE.buffer = None


def fused_in_proj(in_proj: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``in_proj(x)`` written into ``out`` ``(B, L, 2E)`` (a workspace view)."""
    torch.matmul(x, in_proj.weight.t(), out=out)
    if in_proj.bias is not None:
        out.add_(in_proj.bias)
    return out


@torch.compiler.disable
def fused_inner(
    xi: torch.Tensor,
    z: torch.Tensor,
    conv: nn.Conv1d,
    x_proj: nn.Linear,
    dt_proj: nn.Linear,
    A_log: torch.Tensor,
    D: torch.Tensor,
    **kwargs: Any,
) -> torch.Tensor:
    """The mixer interior between ``in_proj`` and ``out_proj`` by the fused inference kernels.

    Args:
        xi, z: ``(B, L, E)`` views of ``in_proj``'s output.
        conv, x_proj, dt_proj, A_log, D: one direction's parameters.
        **kwargs: ``reverse``, ``out``, ``scale``, ``accumulate`` of ``mamba_inner_inference``.

    Returns:
        ``(B, L, E)`` (``out`` when given): ``(scan + D u) * silu(z)``, times ``scale``.
    """
    return mamba_inner_inference(
        xi,
        z,
        conv.weight,
        conv.bias,
        x_proj.weight,
        dt_proj.weight,
        dt_proj.bias,
        -torch.exp(A_log.float()),
        D.float(),
        **kwargs,
    )


def selective_ssm(
    u: torch.Tensor,
    z: torch.Tensor | None,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_proj_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_last_state: bool = False,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The S6 core: input-dependent ``(Delta, B, C)`` and the selective scan (paper Alg. 2).

    ``Delta = softplus(dt_proj(x_proj(u)[:R]))`` is computed in fp32 (also under autocast) and set
    to 0 at pads, so a pad leaves the state untouched (``exp(0 * A) = 1``, no input).

    Args:
        u: ``(B, E, L)`` conv output after SiLU (pads already zero).
        z: ``(B, E, L)`` gate or ``None``.
        x_proj_weight: ``(R + 2N, E)``. dt_proj_weight: ``(E, R)``. dt_proj_bias: ``(E,)``.
        A_log: ``(E, N)``; ``A = -exp(A_log.float())``. D: ``(E,)``.
        mask, resets: ``(B, L)`` bool or ``None``.
        initial_state: ``(B, E, N)`` fp32 or ``None``.
        return_last_state: also return the state after the last token.
        reverse: scan ``t = L-1 .. 0`` (the backward direction of a bidirectional mixer, without
            flipping any tensor; see ``ops.selective_scan``).

    Returns:
        ``y (B, E, L)`` in ``u``'s dtype and the last state ``(B, E, N)`` fp32 (or ``None``).
    """
    rank = dt_proj_weight.shape[1]
    d_state = A_log.shape[1]
    # channel-first products keep every scan input (B, ., L) contiguous in L without copies
    x_dbl = torch.matmul(x_proj_weight.to(u.dtype), u)  # (B, R + 2N, L)
    dt, B, C = torch.split(x_dbl, [rank, d_state, d_state], dim=1)
    with torch.autocast(device_type=u.device.type, enabled=False):
        delta = torch.matmul(dt_proj_weight.float(), dt.float())  # (B, E, L), fp32
        delta_bias = dt_proj_bias.float()
        if mask is not None:
            # pads get Delta = 0 after the softplus, so it cannot be left to the kernel
            delta = F.softplus(delta + delta_bias[:, None]) * mask[:, None, :]
            delta_bias = None
        A = -torch.exp(A_log.float())
        out = _selective_scan(
            u,
            delta,
            A,
            B,
            C,
            D.float(),
            z=z,
            delta_bias=delta_bias,
            delta_softplus=mask is None,
            return_last_state=return_last_state,
            initial_state=initial_state,
            resets=resets,
            reverse=reverse,
        )
    if return_last_state:
        return out[0], out[1]
    return out, None


def make_dt_proj(
    dt_rank: int,
    d_inner: int,
    *,
    dt_min: float,
    dt_max: float,
    dt_init: str,
    dt_scale: float,
    dt_init_floor: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Linear:
    """``dt_proj`` with Mamba's init: weight ``U(+-dt_scale / sqrt(R))``, bias ``softplus^-1(dt)``.

    ``dt`` is log-uniform in ``[dt_min, dt_max]``, floored at ``dt_init_floor``.
    """
    if dt_init not in ("random", "constant"):
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}.")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.")
    proj = nn.Linear(dt_rank, d_inner, bias=True, device=device, dtype=dtype)
    std = dt_rank**-0.5 * dt_scale
    with torch.no_grad():
        if dt_init == "constant":
            proj.weight.fill_(std)
        else:
            proj.weight.uniform_(-std, std)
        proj.bias.copy_(inverse_softplus_dt(d_inner, dt_min, dt_max, dt_init_floor, device))
    proj.bias._no_reinit = True  # type: ignore[attr-defined]
    return proj


def inverse_softplus_dt(
    n: int, dt_min: float, dt_max: float, floor: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """``softplus^-1(dt)`` for ``dt`` log-uniform in ``[dt_min, dt_max]`` (clamped >= floor), fp32."""
    log_span = math.log(dt_max) - math.log(dt_min)
    dt = torch.exp(torch.rand(n, device=device) * log_span + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def make_A_log(
    d_inner: int, d_state: int, device: torch.device | str | None = None
) -> nn.Parameter:
    """S4D-Real init ``A_log[e, n] = log(n + 1)``, fp32, no weight decay."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
    param = nn.Parameter(torch.log(a))
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


def make_D(shape: int | tuple[int, ...], device: torch.device | str | None = None) -> nn.Parameter:
    """Skip connection ``D = 1``, fp32, no weight decay."""
    param = nn.Parameter(torch.ones(shape, dtype=torch.float32, device=device))
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


def resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    """``"auto"`` -> ``ceil(d_model / 16)``."""
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    if not isinstance(dt_rank, int) or dt_rank <= 0:
        raise ValueError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}.")
    return dt_rank


def check_sizes(owner: str, **sizes: float) -> None:
    """Raise ``ValueError`` naming the first size that is not positive."""
    for name, value in sizes.items():
        if not value > 0:
            raise ValueError(f"{owner}: {name} must be positive, got {value!r}.")


class Mamba(nn.Module):
    """Mamba-1 selective SSM mixer (Gu & Dao, 2023, https://arxiv.org/abs/2312.00752).

    ``x -> in_proj -> (x, z)``; ``x -> causal depthwise conv -> SiLU -> S6 scan`` gated by
    ``silu(z)``; ``out_proj``. ``A_log``, ``D`` and the dt path stay fp32 under autocast.

    ``torch.compile`` works and matches eager (tested), with the scan kernel as a graph break that
    runs eagerly: the kernels' CPU backend drives native code through ctypes and a thread pool,
    which Dynamo cannot trace, so the scan call is ``torch.compiler.disable``d.

    Args:
        d_model: model width ``D``.
        d_state: SSM state size ``N`` per channel.
        d_conv: causal depthwise conv width ``K``.
        expand: ``E = expand * D`` inner channels.
        dt_rank: rank ``R`` of the dt projection; ``"auto"`` = ``ceil(D / 16)``.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: dt init (``make_dt_proj``).
        conv_bias: bias in the depthwise conv. bias: biases in in_proj / out_proj.
        layer_idx: position in a stack (for callers keying caches by layer).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        layer_idx: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_sizes(
            type(self).__name__, d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand
        )
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.layer_idx = layer_idx
        self.out_features = d_model
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = make_dt_proj(
            self.dt_rank,
            self.d_inner,
            dt_min=dt_min,
            dt_max=dt_max,
            dt_init=dt_init,
            dt_scale=dt_scale,
            dt_init_floor=dt_init_floor,
            **factory,
        )
        self.A_log = make_A_log(self.d_inner, d_state, device)
        self.D = make_D(self.d_inner, device)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> ConvSSMState:
        """Zero state: conv ``(B, E, K - 1)`` in ``dtype``, ssm ``(B, E, N)`` fp32."""
        device = self.in_proj.weight.device if device is None else device
        dtype = self.in_proj.weight.dtype if dtype is None else dtype
        return ConvSSMState(
            conv=torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            ssm=torch.zeros(
                batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32
            ),
        )

    def forward(
        self,
        x: torch.Tensor,
        *,
        state: ConvSSMState | None = None,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_state: bool = False,
        reverse: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ConvSSMState]:
        """Mix a sequence.

        Args:
            x: ``(B, L, D)``.
            state: continue from this state (conv window and SSM state) instead of zeros.
            resets: ``(B, L)`` bool, True where an episode starts (state and conv window restart).
            mask: ``(B, L)`` bool, True = real token; pads are zeroed before the conv and the scan,
                leave the state untouched and give zero output.
            return_state: also return the state after the last token.
            reverse: mix the reversed sequence, in and out in the original order (equals
                ``forward(x.flip(1)).flip(1)`` without flips; the backward direction of a
                bidirectional mixer). Not with ``state``, ``resets``, ``mask`` or
                ``return_state``.

        Returns:
            ``y (B, L, D)``, or ``(y, state)``.
        """
        name = type(self).__name__
        check_sequence_inputs(name, x, self.d_model, mask, resets)
        if state is not None:
            check_state(state, ConvSSMState, name)
        plain = state is None and resets is None and mask is None and not return_state
        if reverse and not plain:
            raise ValueError(
                f"{name}: reverse=True mixes a whole sequence from its end; it cannot take a "
                "state, resets or a mask, nor return a state. Flip the inputs yourself for those."
            )
        if plain and can_fuse(x, self):
            return self.forward_fused(x, reverse=reverse)
        if reverse:
            xi, z = channels_first_in_proj(self.in_proj, x, self.d_inner)
            u = conv_silu(xi, self.conv1d.weight, self.conv1d.bias, reverse=True)
            y, _ = selective_ssm(
                u, z, self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias, self.A_log,
                self.D, reverse=True,
            )  # fmt: skip
            return self.out_proj(y.transpose(1, 2))
        xi, z = channels_first_in_proj(self.in_proj, x, self.d_inner)  # (B, E, L) each
        if state is None and mask is None and resets is None:  # training: the fused conv + SiLU
            u = conv_silu(xi, self.conv1d.weight, self.conv1d.bias)
            conv_state = conv_prefix(xi, self.conv1d.weight.shape[-1]) if return_state else None
        else:
            conv, conv_state = causal_conv1d(
                xi,
                self.conv1d.weight,
                self.conv1d.bias,
                prefix=None if state is None else state.conv,
                mask=mask,
                resets=resets,
            )
            u = F.silu(conv)
        if mask is not None:
            u = u * mask[:, None, :].to(u.dtype)
        y, last = selective_ssm(
            u,
            z,
            self.x_proj.weight,
            self.dt_proj.weight,
            self.dt_proj.bias,
            self.A_log,
            self.D,
            mask=mask,
            resets=resets,
            initial_state=None if state is None else state.ssm,
            return_last_state=return_state,
        )
        out = self.out_proj(y.transpose(1, 2))
        if mask is not None:
            out = out * mask[..., None].to(out.dtype)
        if return_state:
            return out, ConvSSMState(conv=conv_state, ssm=last)
        return out

    def forward_fused(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Inference from zero state, no mask/resets, by the fused kernels (see :func:`can_fuse`).

        Args:
            x: ``(B, L, D)``.
            reverse: mix the reversed sequence, in and out in the original order (equals
                ``forward(x.flip(1)).flip(1)`` without the flips).

        Returns:
            ``y (B, L, D)``.
        """
        E, (batch, length) = self.d_inner, x.shape[:2]
        with inference_workspace(batch * length * 3 * E) as buffer:
            # (B, L, 2E), read in place by the fused kernels; y (B, L, E) beside it
            xz = fused_in_proj(
                self.in_proj, x, buffer[: batch * length * 2 * E].view(batch, length, -1)
            )
            y = fused_inner(
                xz[..., :E],
                xz[..., E:],
                self.conv1d,
                self.x_proj,
                self.dt_proj,
                self.A_log,
                self.D,
                reverse=reverse,
                out=buffer[batch * length * 2 * E :].view(batch, length, E),
            )
            return self.out_proj(y)

    def step(
        self, x: torch.Tensor, state: ConvSSMState, *, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ConvSSMState]:
        """One token of recurrent inference, O(1) in the position.

        Args:
            x: ``(B, D)``.
            state: from :meth:`init_state` or ``forward(..., return_state=True)``.
            resets: ``(B,)`` bool: restart these sequences' state before this token.

        Returns:
            ``y (B, D)`` and the new state (the input state is not modified).
        """
        name = type(self).__name__
        check_step_input(name, x, self.d_model)
        check_state(state, ConvSSMState, name)
        if resets is not None:
            state = state.masked_reset(resets)
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, E) each
        window = torch.cat([state.conv.to(xi.dtype), xi[..., None]], dim=-1)  # (B, E, K)
        conv = (window * self.conv1d.weight[:, 0, :].to(xi.dtype)).sum(-1)
        if self.conv1d.bias is not None:
            conv = conv + self.conv1d.bias.to(xi.dtype)
        u = F.silu(conv)
        dt, B, C = torch.split(
            F.linear(u, self.x_proj.weight), [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        with torch.autocast(device_type=x.device.type, enabled=False):
            delta = F.softplus(
                F.linear(dt.float(), self.dt_proj.weight.float(), self.dt_proj.bias.float())
            )  # (B, E)
            A = -torch.exp(self.A_log.float())
            uf = u.float()
            h = (
                state.ssm * torch.exp(delta[..., None] * A)
                + (delta * uf)[..., None] * B.float()[:, None, :]
            )
            y = (h * C.float()[:, None, :]).sum(-1) + self.D.float() * uf
            y = y * F.silu(z.float())
        out = self.out_proj(y.to(u.dtype))
        return out, ConvSSMState(conv=window[..., 1:], ssm=h)


@register_model(
    "core.mamba",
    tiny={"d_model": 16, "d_state": 4},
    example_inputs=lambda m: (torch.randn(2, 12, m.d_model),),
    description="Mamba-1 selective SSM mixer (B, L, D) -> (B, L, D)",
)
def mamba(**kwargs: object) -> Mamba:
    """Mamba-1 selective SSM mixer (d_model 256, d_state 16, expand 2)."""
    return Mamba(**{"d_model": 256, **kwargs})  # type: ignore[arg-type]
