"""Bidirectional Mamba: one scan forward, one over the reversed sequence, merged.

The forms in use (REFERENCES.md section 1.8), all expressible here:

- ``variant="v2"``: Vision Mamba (Zhu et al., 2024, https://arxiv.org/abs/2401.09417), also
  Mamba-TasNet and DPMamba. ``in_proj`` / ``out_proj`` shared; the backward direction has its own
  ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``; the same ``z`` gate in both;
  ``out_proj((y_f + flip(y_b)) / 2)``. Parameter names match Vim's checkpoints.
- ``variant="v1"``: Vim's option with only ``A_b_log`` separate.
- ``variant="separate"``: two independent :class:`Mamba` blocks, ``mamba_fwd`` and ``mamba_bwd``
  (S-Mamba sums them, SPMamba concatenates them to ``2 * d_model``).

``merge``: ``"mean"`` (Vim's divide-by-2), ``"add"``, or ``"concat"`` (for v1/v2 the concatenated
``2E`` channels feed ``out_proj``; for ``separate`` the output is ``2 * d_model`` wide).
:attr:`BiMamba.out_features` is the output width.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core.mamba import (
    Mamba,
    can_fuse,
    causal_conv1d,
    channels_first_in_proj,
    conv_silu,
    fused_in_proj,
    fused_inner,
    inference_workspace,
    make_A_log,
    make_D,
    make_dt_proj,
    selective_ssm,
)
from ssmkit.core.registry import register_model
from ssmkit.core.state import check_sequence_inputs

__all__ = ["BiMamba", "reverse_resets"]

VARIANTS = ("v2", "v1", "separate")
MERGES = ("mean", "add", "concat")


def reverse_resets(resets: torch.Tensor) -> torch.Tensor:
    """Episode starts of the reversed sequence: ``(B, L)`` -> ``(B, L)`` in reversed order.

    Read backwards, an episode starts at its last token, i.e. just before a forward start.
    """
    ends = torch.zeros_like(resets)
    ends[:, :-1] = resets[:, 1:]
    return ends.flip(1)


def _merge(y_f: torch.Tensor, y_b: torch.Tensor, merge: str, dim: int) -> torch.Tensor:
    if merge == "mean":
        return (y_f + y_b) / 2
    if merge == "add":
        return y_f + y_b
    return torch.cat([y_f, y_b], dim=dim)


class BiMamba(nn.Module):
    """Bidirectional (non-causal) Mamba mixer: Vim v2 / v1, or two separate Mamba blocks.

    Zhu et al., "Vision Mamba" (2024), https://arxiv.org/abs/2401.09417 (v1, v2, divide-by-2);
    Wang et al., "S-Mamba" (2024), https://arxiv.org/abs/2403.11144 (separate, add);
    Li et al., "SPMamba" (2024), https://arxiv.org/abs/2404.02063 (separate, concat).

    Args:
        d_model: model width ``D``.
        variant: ``"v2"``, ``"v1"`` or ``"separate"`` (see the module docstring).
        merge: ``"mean"``, ``"add"`` or ``"concat"``.
        **mamba_kwargs: :class:`Mamba` arguments (``d_state``, ``d_conv``, ``expand``, ...).
    """

    def __init__(
        self, d_model: int, variant: str = "v2", merge: str = "mean", **mamba_kwargs: Any
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"BiMamba: variant must be one of {VARIANTS}, got {variant!r}.")
        if merge not in MERGES:
            raise ValueError(f"BiMamba: merge must be one of {MERGES}, got {merge!r}.")
        self.d_model = d_model
        self.variant = variant
        self.merge = merge
        self.out_features = 2 * d_model if variant == "separate" and merge == "concat" else d_model
        if variant == "separate":
            self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
            self.mamba_bwd = Mamba(d_model, **mamba_kwargs)
            return
        base = Mamba(d_model, **mamba_kwargs)
        self.d_inner, self.d_state, self.dt_rank = base.d_inner, base.d_state, base.dt_rank
        self.in_proj, self.conv1d, self.x_proj, self.dt_proj = (
            base.in_proj,
            base.conv1d,
            base.x_proj,
            base.dt_proj,
        )
        self.A_log, self.D = base.A_log, base.D
        device = base.A_log.device
        self.A_b_log = make_A_log(self.d_inner, self.d_state, device)
        if variant == "v2":
            factory = {"device": device, "dtype": base.in_proj.weight.dtype}
            conv = base.conv1d
            self.conv1d_b = nn.Conv1d(
                self.d_inner,
                self.d_inner,
                conv.kernel_size[0],
                groups=self.d_inner,
                padding=conv.padding[0],
                bias=conv.bias is not None,
                **factory,
            )
            self.x_proj_b = nn.Linear(self.d_inner, base.x_proj.out_features, bias=False, **factory)
            dt_kwargs = {
                k: mamba_kwargs[k]
                for k in ("dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor")
                if k in mamba_kwargs
            }
            defaults = {
                "dt_min": 0.001,
                "dt_max": 0.1,
                "dt_init": "random",
                "dt_scale": 1.0,
                "dt_init_floor": 1e-4,
            }
            self.dt_proj_b = make_dt_proj(
                self.dt_rank, self.d_inner, **{**defaults, **dt_kwargs}, **factory
            )
            self.D_b = make_D(self.d_inner, device)
        width = 2 * self.d_inner if merge == "concat" else self.d_inner
        out = base.out_proj
        self.out_proj = nn.Linear(
            width, d_model, bias=out.bias is not None, device=device, dtype=out.weight.dtype
        )

    def _direction(
        self,
        xi: torch.Tensor,
        z: torch.Tensor,
        mask: torch.Tensor | None,
        resets: torch.Tensor | None,
        backward: bool,
        reverse: bool = False,
    ) -> torch.Tensor:
        """One direction's conv, SiLU and gated scan: ``(B, E, L)`` -> ``(B, E, L)``.

        ``backward`` picks the backward direction's parameters; ``reverse`` runs it on the
        sequence as given by the anti-causal conv and a reverse scan (no flips; mask and resets
        must be ``None``), else the caller has flipped the inputs.
        """
        own = backward and self.variant == "v2"
        conv_module = self.conv1d_b if own else self.conv1d
        if reverse or (mask is None and resets is None):  # the fused conv + SiLU
            u = conv_silu(xi, conv_module.weight, conv_module.bias, reverse=reverse)
        else:
            conv, _ = causal_conv1d(
                xi, conv_module.weight, conv_module.bias, mask=mask, resets=resets
            )
            u = F.silu(conv)
        if mask is not None:
            u = u * mask[:, None, :].to(u.dtype)
        x_proj = self.x_proj_b if own else self.x_proj
        dt_proj = self.dt_proj_b if own else self.dt_proj
        y, _ = selective_ssm(
            u,
            z,
            x_proj.weight,
            dt_proj.weight,
            dt_proj.bias,
            self.A_b_log if backward else self.A_log,
            self.D_b if own else self.D,
            mask=mask,
            resets=resets,
            reverse=reverse,
        )
        return y

    def forward(
        self,
        x: torch.Tensor,
        *,
        state: Any = None,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_state: bool = False,
    ) -> torch.Tensor:
        """Mix a sequence in both directions.

        Args:
            x: ``(B, L, D)``.
            state, return_state: not supported (a bidirectional mixer sees the whole sequence).
            resets: ``(B, L)`` bool episode starts: neither direction crosses a boundary.
            mask: ``(B, L)`` bool, True = real token (right or left padding).

        Returns:
            ``(B, L, out_features)``.
        """
        check_sequence_inputs("BiMamba", x, self.d_model, mask, resets)
        if state is not None or return_state:
            raise ValueError(
                "BiMamba is bidirectional (non-causal): it has no recurrent state to start from or "
                "return. Run whole sequences, or use the causal Mamba for streaming."
            )
        if mask is None and resets is None and can_fuse(x, self):
            return self._forward_fused(x)
        mask_b = None if mask is None else mask.flip(1)
        resets_b = None if resets is None else reverse_resets(resets)
        if self.variant == "separate":
            y_f = self.mamba_fwd(x, mask=mask, resets=resets)
            if mask is None and resets is None:
                y_b = self.mamba_bwd(x, reverse=True)
            else:
                y_b = self.mamba_bwd(x.flip(1), mask=mask_b, resets=resets_b).flip(1)
            return _merge(y_f, y_b, self.merge, dim=-1)
        xi, z = channels_first_in_proj(self.in_proj, x, self.d_inner)
        y_f = self._direction(xi, z, mask, resets, backward=False)
        if mask is None and resets is None:  # reverse conv and scan: nothing is flipped
            y_b = self._direction(xi, z, None, None, backward=True, reverse=True)
        else:
            y_b = self._direction(xi.flip(-1), z.flip(-1), mask_b, resets_b, backward=True).flip(-1)
        out = self.out_proj(_merge(y_f, y_b, self.merge, dim=1).transpose(1, 2))
        if mask is not None:
            out = out * mask[..., None].to(out.dtype)
        return out

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Inference without mask/resets: both directions by the fused kernels, which read
        ``in_proj``'s output in place (the backward one by reversed indexing, no flips) and write
        the merged result straight into the ``out_proj`` input."""
        if self.variant == "separate":
            y_f = self.mamba_fwd.forward_fused(x)
            y_b = self.mamba_bwd.forward_fused(x, reverse=True)
            return _merge(y_f, y_b, self.merge, dim=-1)
        E, (batch, length) = self.d_inner, x.shape[:2]
        concat = self.merge == "concat"
        width = 2 * E if concat else E
        own = self.variant == "v2"
        directions = (
            (self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D),
            (
                self.conv1d_b if own else self.conv1d,
                self.x_proj_b if own else self.x_proj,
                self.dt_proj_b if own else self.dt_proj,
                self.A_b_log,
                self.D_b if own else self.D,
            ),
        )
        with inference_workspace(batch * length * (2 * E + width)) as buffer:
            # in_proj's output (B, L, 2E) and the merged out_proj input (B, L, width), reused
            # across layers
            split = batch * length * 2 * E
            xz = fused_in_proj(self.in_proj, x, buffer[:split].view(batch, length, 2 * E))
            merged = buffer[split:].view(batch, length, width)
            for index, params in enumerate(directions):
                fused_inner(
                    xz[..., :E],
                    xz[..., E:],
                    *params,
                    reverse=index == 1,
                    out=merged[..., index * E : (index + 1) * E] if concat else merged,
                    scale=0.5 if self.merge == "mean" else 1.0,
                    accumulate=index == 1 and not concat,
                )
            return self.out_proj(merged)

    def init_state(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: raises ``TypeError`` (a bidirectional mixer cannot stream)."""
        raise TypeError(self._no_recurrence("init_state"))

    def step(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: raises ``TypeError`` (a bidirectional mixer cannot stream)."""
        raise TypeError(self._no_recurrence("step"))

    @staticmethod
    def _no_recurrence(what: str) -> str:
        return (
            f"BiMamba.{what}: a bidirectional mixer needs the whole sequence (its backward scan "
            "starts at the end), so it has no recurrent step. Use the causal Mamba for "
            "token-by-token inference."
        )


@register_model(
    "core.bimamba",
    tiny={"d_model": 16, "d_state": 4},
    example_inputs=lambda m: (torch.randn(2, 12, m.d_model),),
    description="Bidirectional Mamba (Vim v2: shared projections, averaged)",
)
def bimamba(**kwargs: Any) -> BiMamba:
    """Bidirectional Mamba mixer, Vim v2 (d_model 256, d_state 16, expand 2)."""
    return BiMamba(**{"d_model": 256, **kwargs})
