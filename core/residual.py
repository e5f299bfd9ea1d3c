"""Pre-norm residual blocks and the layer stack shared by every SSM model.

``ResidualBlock`` is mamba_ssm's ``Block`` ("add -> norm -> mixer", the residual stream kept in
fp32); ``SequenceBackbone`` is its ``MixerModel`` without the embedding: ``n_layers`` blocks, a
final add + norm, the GPT-2 style rescaled ``out_proj`` init, and optional gradient checkpointing.
Gu & Dao (2023), https://arxiv.org/abs/2312.00752.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ssmkit.core.norms import RMSNorm
from ssmkit.core.registry import register_model
from ssmkit.core.state import StackState, check_sequence_inputs, check_state, check_step_input

__all__ = ["DropPath", "ResidualBlock", "SequenceBackbone", "build_mixer"]

MIXERS: dict[str, tuple[str, str]] = {
    "mamba": ("ssmkit.core.mamba", "Mamba"),
    "mamba2": ("ssmkit.core.mamba2", "Mamba2"),
    "bimamba": ("ssmkit.core.bimamba", "BiMamba"),
    "s4d": ("ssmkit.core.s4d", "S4D"),
    "s5": ("ssmkit.core.s5", "S5"),
}


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's branch with probability ``p``, rescale the rest.

    Huang et al., "Deep Networks with Stochastic Depth" (2016), https://arxiv.org/abs/1603.09382.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), got {p}.")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _make_norm(norm: str, d_model: int, eps: float) -> nn.Module:
    if norm == "rms":
        return RMSNorm(d_model, eps=eps)
    if norm == "layer":
        return nn.LayerNorm(d_model, eps=eps)
    raise ValueError(f"norm must be 'rms' or 'layer', got {norm!r}.")


class ResidualBlock(nn.Module):
    """Pre-norm residual block: ``residual += drop_path(hidden); hidden = mixer(norm(residual))``.

    The mamba_ssm block layout (Gu & Dao, 2023, https://arxiv.org/abs/2312.00752): the block takes
    and returns the pair ``(hidden, residual)``, so a stack does one add + norm per layer and the
    residual stream can stay fp32 while the mixers run in lower precision.

    Args:
        d_model: width ``D``.
        mixer: a sequence mixer ``(B, L, D) -> (B, L, D)`` with the ssmkit interface.
        norm: ``"rms"`` or ``"layer"``.
        drop_path: stochastic depth rate applied to the incoming ``hidden``.
        residual_in_fp32: keep the residual stream in fp32.
        norm_eps: epsilon of the norm.
    """

    def __init__(
        self,
        d_model: int,
        mixer: nn.Module,
        norm: str = "rms",
        drop_path: float = 0.0,
        residual_in_fp32: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        out = getattr(mixer, "out_features", d_model)
        if out != d_model:
            raise ValueError(
                f"ResidualBlock: the mixer outputs {out} features but the residual stream has "
                f"d_model={d_model}; use a mixer with out_features == d_model (e.g. BiMamba "
                "merge='mean' or 'add' instead of 'concat')."
            )
        self.d_model = d_model
        self.norm = _make_norm(norm, d_model, norm_eps)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path)
        self.residual_in_fp32 = residual_in_fp32

    def _add_norm(
        self, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden if residual is None else self.drop_path(hidden) + residual
        normed = self.norm(residual.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.float()
        return normed, residual

    def forward(
        self, hidden: torch.Tensor, residual: torch.Tensor | None = None, **mixer_kwargs: Any
    ) -> tuple[torch.Tensor, ...]:
        """Args: hidden ``(B, L, D)``; residual ``(B, L, D)`` or ``None`` (first block);
        mixer_kwargs: ``state``, ``resets``, ``mask``, ``return_state`` for the mixer.

        Returns:
            ``(hidden, residual)``, plus the mixer state when ``return_state=True``.
        """
        normed, residual = self._add_norm(hidden, residual)
        out = self.mixer(normed, **mixer_kwargs)
        if mixer_kwargs.get("return_state", False):
            return out[0], residual, out[1]
        return out, residual

    def step(
        self, hidden: torch.Tensor, residual: torch.Tensor | None, state: Any
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One token: hidden, residual ``(B, D)`` -> ``(hidden, residual, state)``."""
        normed, residual = self._add_norm(hidden, residual)
        out, state = self.mixer.step(normed, state)
        return out, residual, state


def build_mixer(
    mixer: str | Callable[[int], nn.Module],
    d_model: int,
    layer_idx: int,
    mixer_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A mixer by name (``"mamba"``, ``"mamba2"``, ``"bimamba"``, ``"s4d"``, ``"s5"``) or factory."""
    if callable(mixer) and not isinstance(mixer, str):
        module = mixer(layer_idx)
        if not isinstance(module, nn.Module):
            raise TypeError(f"mixer factory must return an nn.Module, got {type(module).__name__}.")
        return module
    if mixer not in MIXERS:
        raise ValueError(
            f"mixer must be one of {sorted(MIXERS)} or a callable(layer_idx) -> nn.Module, got {mixer!r}."
        )
    module_name, class_name = MIXERS[mixer]
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = dict(mixer_kwargs or {})
    if "layer_idx" in inspect.signature(cls).parameters:
        kwargs.setdefault("layer_idx", layer_idx)
    return cls(d_model, **kwargs)


def _init_weights(module: nn.Module, n_layers: int, rescale_prenorm_residual: bool) -> None:
    """mamba_ssm's init: zero Linear biases (except ``_no_reinit``), rescaled ``out_proj``.

    ``out_proj.weight`` gets ``kaiming_uniform(a=sqrt(5)) / sqrt(n_layers)`` (GPT-2's scheme).
    """
    if isinstance(module, nn.Linear) and module.bias is not None:
        if not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    if rescale_prenorm_residual:
        out_proj = getattr(module, "out_proj", None)
        if isinstance(out_proj, nn.Linear):
            nn.init.kaiming_uniform_(out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                out_proj.weight /= math.sqrt(n_layers)


class SequenceBackbone(nn.Module):
    """A stack of pre-norm residual SSM blocks, ``(B, L, D) -> (B, L, D)``.

    mamba_ssm's ``MixerModel`` without the embedding (Gu & Dao, 2023,
    https://arxiv.org/abs/2312.00752): ``n_layers`` :class:`ResidualBlock` s, then the last add and
    ``norm_f``. Drop-path rates rise linearly from 0 to ``drop_path`` over the layers (Vim's rule).

    Args:
        d_model: width ``D``.
        n_layers: number of blocks.
        mixer: ``"mamba"``, ``"mamba2"``, ``"s4d"``, ``"s5"``, ``"bimamba"`` or a
            ``callable(layer_idx) -> nn.Module``.
        mixer_kwargs: keyword arguments of a named mixer (``d_state``, ``expand``, ...).
        norm: ``"rms"`` or ``"layer"``.
        drop_path: largest stochastic depth rate (last layer).
        final_norm: apply ``norm_f`` after the last add.
        gradient_checkpointing: recompute each block in the backward pass (saves activations).
        residual_in_fp32: keep the residual stream in fp32.
        norm_eps: epsilon of the norms.
        rescale_prenorm_residual: apply mamba_ssm's rescaled ``out_proj`` init.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        mixer: str | Callable[[int], nn.Module] = "mamba",
        mixer_kwargs: dict[str, Any] | None = None,
        norm: str = "rms",
        drop_path: float = 0.0,
        final_norm: bool = True,
        gradient_checkpointing: bool = False,
        residual_in_fp32: bool = True,
        norm_eps: float = 1e-5,
        rescale_prenorm_residual: bool = True,
    ) -> None:
        super().__init__()
        if n_layers <= 0 or d_model <= 0:
            raise ValueError(
                f"SequenceBackbone: d_model and n_layers must be positive, got {d_model}, {n_layers}."
            )
        self.d_model = d_model
        self.n_layers = n_layers
        self.gradient_checkpointing = gradient_checkpointing
        rates = [drop_path * i / max(1, n_layers - 1) for i in range(n_layers)]
        self.layers = nn.ModuleList(
            ResidualBlock(
                d_model,
                build_mixer(mixer, d_model, i, mixer_kwargs),
                norm=norm,
                drop_path=rates[i],
                residual_in_fp32=residual_in_fp32,
                norm_eps=norm_eps,
            )
            for i in range(n_layers)
        )
        self.norm_f = _make_norm(norm, d_model, norm_eps) if final_norm else None
        self.apply(lambda m: _init_weights(m, n_layers, rescale_prenorm_residual))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn gradient checkpointing on or off (timm's name)."""
        self.gradient_checkpointing = enable

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StackState:
        """One zero state per layer, wrapped in a :class:`StackState`."""
        return StackState(
            layers=[layer.mixer.init_state(batch_size, device, dtype) for layer in self.layers]
        )

    def _finish(
        self, hidden: torch.Tensor, residual: torch.Tensor, dtype: torch.dtype
    ) -> torch.Tensor:
        residual = hidden + residual
        if self.norm_f is None:
            return residual.to(dtype)
        return self.norm_f(residual.to(self.norm_f.weight.dtype)).to(dtype)

    def forward(
        self,
        x: torch.Tensor,
        *,
        state: StackState | None = None,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, StackState]:
        """Run the stack.

        Args:
            x: ``(B, L, D)``.
            state: per-layer states to continue from (:meth:`init_state` or a previous call).
            resets: ``(B, L)`` bool episode starts, passed to every mixer.
            mask: ``(B, L)`` bool, True = real token, passed to every mixer.
            return_state: also return the per-layer states after the last token.

        Returns:
            ``(B, L, D)``, or ``(y, StackState)``.
        """
        check_sequence_inputs("SequenceBackbone", x, self.d_model, mask, resets)
        if state is not None:
            check_state(state, StackState, "SequenceBackbone")
            if len(state.layers) != self.n_layers:
                raise ValueError(
                    f"SequenceBackbone: state has {len(state.layers)} layers, the model {self.n_layers}."
                )
        hidden, residual = x, None
        states = []
        for i, layer in enumerate(self.layers):
            kwargs: dict[str, Any] = {}
            if mask is not None:
                kwargs["mask"] = mask
            if resets is not None:
                kwargs["resets"] = resets
            if state is not None:
                kwargs["state"] = state.layers[i]
            if return_state:
                kwargs["return_state"] = True
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                out = checkpoint(layer, hidden, residual, use_reentrant=False, **kwargs)
            else:
                out = layer(hidden, residual, **kwargs)
            hidden, residual = out[0], out[1]
            if return_state:
                states.append(out[2])
        y = self._finish(hidden, residual, x.dtype)
        return (y, StackState(layers=states)) if return_state else y

    def step(self, x: torch.Tensor, state: StackState) -> tuple[torch.Tensor, StackState]:
        """One token through every layer: ``x (B, D)`` -> ``(y (B, D), state)``."""
        check_step_input("SequenceBackbone", x, self.d_model)
        check_state(state, StackState, "SequenceBackbone")
        hidden, residual = x, None
        states = []
        for layer, layer_state in zip(self.layers, state.layers, strict=True):
            hidden, residual, layer_state = layer.step(hidden, residual, layer_state)
            states.append(layer_state)
        return self._finish(hidden, residual, x.dtype), StackState(layers=states)


@register_model(
    "core.mamba_stack",
    tiny={"d_model": 16, "n_layers": 2, "mixer_kwargs": {"d_state": 4}},
    example_inputs=lambda m: (torch.randn(2, 12, m.d_model),),
    description="Stack of pre-norm residual Mamba blocks (B, L, D) -> (B, L, D)",
)
def mamba_stack(**kwargs: Any) -> SequenceBackbone:
    """Mamba-1 residual stack (d_model 256, 4 layers)."""
    return SequenceBackbone(**{"d_model": 256, "n_layers": 4, "mixer": "mamba", **kwargs})
