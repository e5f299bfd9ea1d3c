"""Tri-oriented Mamba (ToM): SegMamba's 3-D token mixer.

Xing et al., "SegMamba: Long-range Sequential Modeling Mamba For 3D Medical Image Segmentation",
MICCAI 2024, arXiv 2401.13560 (REFERENCES.md §1.8, §2.5).

A volume ``(B, C, D, H, W)`` is read as three sequences of ``L = D·H·W`` tokens: forward
(row-major ``d, h, w``), reversed, and inter-slice (depth fastest: each pixel visits all slices
before the next pixel). One input projection ``in_proj`` and one ``out_proj`` are shared; each
direction has its own causal depthwise conv, ``x_proj``, ``dt_proj``, ``A_log`` and ``D`` (the
authors' names: ``conv1d``/``conv1d_b``/``conv1d_s`` and so on, so that checkpoints map), and the
three gated outputs are mapped back onto the volume and summed (no division) before ``out_proj``.
SegMamba hard-codes the number of slices for a 128³ input; here the inter-slice order follows the
runtime depth, so any ``D, H, W`` works. The three directions run as three groups of one
selective scan (:func:`ssmkit.core.ss2d.directional_selective_ssm`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssmkit.core.mamba import conv_silu, make_A_log, make_D, make_dt_proj, resolve_dt_rank
from ssmkit.core.registry import register_model
from ssmkit.core.scan_orders import TRI_ORIENTED_ORDERS, merge_3d, scan_3d
from ssmkit.core.ss2d import directional_selective_ssm

_SUFFIXES = ("", "_b", "_s")  # forward, reversed, inter-slice


class TriOrientedMamba(nn.Module):
    """SegMamba's tri-oriented Mamba mixer (Xing et al. 2024, arXiv 2401.13560).

    Args:
        d_model: channels C of the volume.
        d_state: SSM state size N.
        d_conv: causal depthwise conv width along each scan.
        expand: inner width ``E = expand · C``.
        dt_rank: ``"auto"`` (``ceil(C / 16)``) or an int.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: Mamba's dt init.
        conv_bias, bias: biases of the convs and of the in/out projections.

    Shapes: ``forward(x (B, C, D, H, W)) -> (B, C, D, H, W)``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TriOrientedMamba: {name} must be a positive int, got {value!r}.")
        if expand <= 0:
            raise ValueError(f"TriOrientedMamba: expand must be positive, got {expand!r}.")
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner = int(expand * d_model)
        self.dt_rank = resolve_dt_rank(dt_rank, d_model)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        for suffix in _SUFFIXES:
            conv = nn.Conv1d(
                d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias
            )
            setattr(self, f"conv1d{suffix}", conv)
            x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
            setattr(self, f"x_proj{suffix}", x_proj)
            dt_proj = make_dt_proj(
                self.dt_rank,
                d_inner,
                dt_min=dt_min,
                dt_max=dt_max,
                dt_init=dt_init,
                dt_scale=dt_scale,
                dt_init_floor=dt_init_floor,
            )
            setattr(self, f"dt_proj{suffix}", dt_proj)
            a_name = "A_log" if suffix == "" else f"A{suffix}_log"
            self.register_parameter(a_name, make_A_log(d_inner, d_state))
            self.register_parameter(f"D{suffix}", make_D(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def _stacked(self) -> dict[str, torch.Tensor]:
        """The three directions' parameters stacked in :data:`TRI_ORIENTED_ORDERS` order."""
        convs = [getattr(self, f"conv1d{s}") for s in _SUFFIXES]
        x_projs = [getattr(self, f"x_proj{s}") for s in _SUFFIXES]
        dt_projs = [getattr(self, f"dt_proj{s}") for s in _SUFFIXES]
        return {
            "conv_weight": torch.cat([c.weight for c in convs]),
            "conv_bias": None if convs[0].bias is None else torch.cat([c.bias for c in convs]),
            "x_proj_weight": torch.stack([p.weight for p in x_projs]),
            "dt_projs_weight": torch.stack([p.weight for p in dt_projs]),
            "dt_projs_bias": torch.stack([p.bias for p in dt_projs]),
            "A_logs": torch.cat([self.A_log, self.A_b_log, self.A_s_log]),
            "Ds": torch.cat([self.D, self.D_b, self.D_s]),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix a volume.

        Args:
            x: ``(B, C, D, H, W)``.

        Returns:
            ``(B, C, D, H, W)``.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                f"TriOrientedMamba: x must be a floating tensor (B, C, D, H, W), got "
                f"{type(x).__name__}."
            )
        if x.dim() != 5 or x.shape[1] != self.d_model:
            raise ValueError(
                f"TriOrientedMamba: x must have shape (B, C, D, H, W) with C = {self.d_model}, "
                f"got {tuple(x.shape)}. For 2-D images add a depth axis of size 1 "
                "(x.unsqueeze(2))."
            )
        batch, _, depth, height, width = x.shape
        length = depth * height * width
        e = self.d_inner
        xz = torch.einsum("bcdhw,ec->bedhw", x, self.in_proj.weight)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None, None, None]
        seqs = scan_3d(xz, TRI_ORIENTED_ORDERS)  # (B, 3, 2E, L)
        xs, zs = seqs[:, :, :e], seqs[:, :, e:]
        p = self._stacked()
        conv = conv_silu(xs.reshape(batch, 3 * e, length), p["conv_weight"], p["conv_bias"])
        xs = conv.reshape(batch, 3, e, length)
        ys = directional_selective_ssm(
            xs,
            p["x_proj_weight"],
            p["dt_projs_weight"],
            p["dt_projs_bias"],
            p["A_logs"],
            p["Ds"],
            z=zs,
        )
        y = merge_3d(ys, depth, height, width, TRI_ORIENTED_ORDERS)  # (B, E, D, H, W)
        out = torch.einsum("bedhw,ce->bcdhw", y, self.out_proj.weight)
        if self.out_proj.bias is not None:
            out = out + self.out_proj.bias[:, None, None, None]
        return out


def _example_inputs(model: nn.Module) -> tuple[Any, ...]:
    return (torch.randn(2, model.d_model, 3, 4, 5),)


@register_model("core.tri_mamba", tiny={"d_model": 8, "d_state": 4}, example_inputs=_example_inputs)
def tri_mamba(**kwargs: Any) -> TriOrientedMamba:
    """SegMamba's tri-oriented Mamba (forward, reversed, inter-slice scans), d_model 48."""
    return TriOrientedMamba(**{"d_model": 48, **kwargs})
