"""SS2D: VMamba's 2-D selective scan, K directions in one grouped scan.

Liu et al., "VMamba: Visual State Space Model", NeurIPS 2024, arXiv 2401.10166 (REFERENCES.md §1.9,
§2.1). Parameter names follow the authors' SS2D (``in_proj``, ``conv2d``, ``x_proj_weight``,
``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``, ``out_norm``, ``out_proj``) so that their
checkpoints map 1:1.

``x -> in_proj -> (x, z)``; ``x -> depthwise Conv2d -> SiLU -> cross-scan`` into K sequences
(B, K, E, L); per direction ``x_proj`` gives ``(dt, B, C)`` and ``dt_projs`` the step; the K
directions run as K groups of ONE selective scan (u ``(B, K·E, L)``, B and C ``(B, K, N, L)``);
cross-merge sums them back onto the grid; ``LayerNorm(E)``, ``·SiLU(z)`` (when ``with_z``),
``out_proj``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core import ops
from ssmkit.core.mamba import inverse_softplus_dt, resolve_dt_rank
from ssmkit.core.registry import register_model
from ssmkit.core.scan_orders import CROSS_ORDERS, check_orders, merge_2d, scan_2d


def directional_selective_ssm(
    xs: torch.Tensor,
    x_proj_weight: torch.Tensor,
    dt_projs_weight: torch.Tensor,
    dt_projs_bias: torch.Tensor,
    A_logs: torch.Tensor,
    Ds: torch.Tensor,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """K directions of S6, each with its own projections, as one grouped selective scan.

    Args:
        xs: ``(B, K, E, L)`` the K sequences (after conv and SiLU).
        x_proj_weight: ``(K, R + 2N, E)``.
        dt_projs_weight: ``(K, E, R)``. dt_projs_bias: ``(K, E)`` or ``(K·E,)``.
        A_logs: ``(K·E, N)``; ``A = -exp(A_logs.float())``. Ds: ``(K·E,)``.
        z: optional gate ``(B, K, E, L)`` applied inside the scan (``y·SiLU(z)``).

    Returns:
        ``(B, K, E, L)`` in ``xs``'s dtype.
    """
    batch, k, e, length = xs.shape
    rank = dt_projs_weight.shape[-1]
    d_state = A_logs.shape[-1]
    x_dbl = torch.einsum("bkel,kce->bkcl", xs, x_proj_weight.to(xs.dtype))
    dts, b, c = torch.split(x_dbl, [rank, d_state, d_state], dim=2)
    with torch.autocast(device_type=xs.device.type, enabled=False):
        delta = torch.einsum("bkrl,ker->bkel", dts.float(), dt_projs_weight.float())
        y = ops.selective_scan(
            xs.reshape(batch, k * e, length),
            delta.reshape(batch, k * e, length),
            -torch.exp(A_logs.float()),
            b.float(),
            c.float(),
            Ds.float(),
            z=None if z is None else z.reshape(batch, k * e, length),
            delta_bias=dt_projs_bias.float().reshape(-1),
            delta_softplus=True,
        )
    return y.reshape(batch, k, e, length).to(xs.dtype)


def init_direction_params(
    k: int,
    d_inner: int,
    d_state: int,
    dt_rank: int,
    *,
    dt_min: float,
    dt_max: float,
    dt_init: str,
    dt_scale: float,
    dt_init_floor: float,
) -> dict[str, nn.Parameter]:
    """Mamba-initialised stacked parameters of K directions (REFERENCES.md §1.10).

    Returns ``x_proj_weight`` (K, R+2N, E) ~ U(±1/√E), ``dt_projs_weight`` (K, E, R) ~
    U(±dt_scale/√R), ``dt_projs_bias`` (K, E) = softplus⁻¹(log-uniform dt), ``A_logs`` (K·E, N) =
    log(1..N), ``Ds`` (K·E,) = 1; the last two without weight decay.
    """
    if dt_init not in ("random", "constant"):
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}.")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.")
    bound = 1 / math.sqrt(d_inner)
    x_proj = torch.empty(k, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound)
    std = dt_rank**-0.5 * dt_scale
    dt_w = torch.empty(k, d_inner, dt_rank)
    if dt_init == "constant":
        dt_w.fill_(std)
    else:
        dt_w.uniform_(-std, std)
    dt_b = torch.stack(
        [inverse_softplus_dt(d_inner, dt_min, dt_max, dt_init_floor) for _ in range(k)]
    )
    a_logs = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(k * d_inner, 1)
    params = {
        "x_proj_weight": nn.Parameter(x_proj),
        "dt_projs_weight": nn.Parameter(dt_w),
        "dt_projs_bias": nn.Parameter(dt_b),
        "A_logs": nn.Parameter(a_logs),
        "Ds": nn.Parameter(torch.ones(k * d_inner)),
    }
    params["dt_projs_bias"]._no_reinit = True  # type: ignore[attr-defined]
    params["A_logs"]._no_weight_decay = True  # type: ignore[attr-defined]
    params["Ds"]._no_weight_decay = True  # type: ignore[attr-defined]
    return params


class SS2D(nn.Module):
    """VMamba 2-D selective-scan mixer (Liu et al. 2024, arXiv 2401.10166).

    Args:
        d_model: channels D.
        d_state: state size N per channel and direction.
        ssm_ratio: inner width ``E = int(ssm_ratio · D)``.
        d_conv: depthwise conv kernel (odd; < 2 means no conv, as in VMamba).
        dt_rank: ``"auto"`` (``ceil(D / 16)``) or an int.
        orders: the K scan orders (see :mod:`ssmkit.core.scan_orders`); VMamba's four by default.
        with_z: gate the output with ``SiLU(z)`` (VMamba v0/v2); False is ``v05_noz``.
        channel_first: inputs and outputs ``(B, D, H, W)`` instead of ``(B, H, W, D)``.
        dropout: dropout after ``out_proj``.
        conv_bias, bias: biases of the conv and of the in/out projections.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Mamba's dt init.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        d_conv: int = 3,
        dt_rank: int | str = "auto",
        orders: tuple[str, ...] = CROSS_ORDERS,
        with_z: bool = True,
        channel_first: bool = False,
        dropout: float = 0.0,
        conv_bias: bool = True,
        bias: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.orders = check_orders(tuple(orders))
        if d_conv > 1 and d_conv % 2 == 0:
            raise ValueError(
                f"SS2D: d_conv must be odd so the depthwise conv keeps H and W, got {d_conv}."
            )
        if d_model < 1 or d_state < 1 or ssm_ratio <= 0:
            raise ValueError(
                f"SS2D: d_model, d_state and ssm_ratio must be positive, got {d_model}, "
                f"{d_state}, {ssm_ratio}."
            )
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        self.dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.with_z = with_z
        self.channel_first = channel_first
        self.in_proj = nn.Linear(d_model, d_inner * (2 if with_z else 1), bias=bias)
        self.conv2d = (
            nn.Conv2d(
                d_inner,
                d_inner,
                d_conv,
                padding=(d_conv - 1) // 2,
                groups=d_inner,
                bias=conv_bias,
            )
            if d_conv > 1
            else None
        )
        params = init_direction_params(
            len(self.orders),
            d_inner,
            d_state,
            self.dt_rank,
            dt_min=dt_min,
            dt_max=dt_max,
            dt_init=dt_init,
            dt_scale=dt_scale,
            dt_init_floor=dt_init_floor,
        )
        for name, param in params.items():
            self.register_parameter(name, param)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def _check_input(self, x: Any) -> None:
        layout = "(B, D, H, W)" if self.channel_first else "(B, H, W, D)"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"SS2D: x must be a floating tensor {layout}, got {type(x).__name__}.")
        dim = 1 if self.channel_first else -1
        if x.dim() != 4 or x.shape[dim] != self.d_model:
            hint = (
                " Build SS2D with channel_first=True for (B, D, H, W) inputs."
                if not self.channel_first and x.dim() == 4 and x.shape[1] == self.d_model
                else ""
            )
            raise ValueError(
                f"SS2D: x must have shape {layout} with D = {self.d_model}, got "
                f"{tuple(x.shape)}.{hint}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix an image.

        Args:
            x: ``(B, H, W, D)``, or ``(B, D, H, W)`` when ``channel_first``.

        Returns:
            Same shape as ``x``.
        """
        self._check_input(x)
        if self.channel_first:
            xz = torch.einsum("bdhw,ed->behw", x, self.in_proj.weight)
            if self.in_proj.bias is not None:
                xz = xz + self.in_proj.bias[:, None, None]
        else:
            xz = self.in_proj(x).permute(0, 3, 1, 2)
        height, width = xz.shape[-2:]
        if self.with_z:
            xi, z = xz.chunk(2, dim=1)  # (B, E, H, W) each
        else:
            xi, z = xz, None
        if self.conv2d is not None:
            # A dense operand: oneDNN's conv backward on non-dense channels-last views has corrupted
            # the heap (tests/bio/test_onednn_regression.py pins the known trigger).
            xi = self.conv2d(xi.contiguous())
        xi = F.silu(xi)
        xs = scan_2d(xi, self.orders)  # (B, K, E, L)
        ys = directional_selective_ssm(
            xs, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds
        )
        y = merge_2d(ys, height, width, self.orders).permute(0, 2, 3, 1)  # (B, H, W, E)
        y = self.out_norm(y)
        if z is not None:
            y = y * F.silu(z.permute(0, 2, 3, 1))
        out = self.dropout(self.out_proj(y))
        return out.permute(0, 3, 1, 2) if self.channel_first else out


def _example_inputs(model: nn.Module) -> tuple[Any, ...]:
    shape = (2, model.d_model, 5, 7) if model.channel_first else (2, 5, 7, model.d_model)
    return (torch.randn(*shape),)


@register_model("core.ss2d", tiny={"d_model": 8, "d_state": 4}, example_inputs=_example_inputs)
def ss2d(**kwargs: Any) -> SS2D:
    """VMamba SS2D mixer (4-direction cross-scan, grouped selective scan), d_model 96."""
    return SS2D(**{"d_model": 96, **kwargs})
