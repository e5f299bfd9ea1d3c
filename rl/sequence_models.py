"""The sequence model inside a world model: one parallel pass with resets, and a recurrent step.

Every core has ``forward(x (B, T, D), resets (B, T) bool, state) -> (h (B, T, H), state)``,
``step(x_t (B, D), state) -> (h_t (B, H), state)`` and ``init_state(batch_size)``, and resets mean
"the state before step t is the initial state". ``SSMCore`` wraps ssmkit's SSM stacks (S5, Mamba,
Mamba-2), whose ``forward`` runs one parallel scan over the whole sequence; ``GRUCore`` is the
DreamerV3 baseline, a loop over time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class GRUCore(nn.Module):
    """GRU baseline (DreamerV3's RSSM cell): a sequential loop, zero state at resets.

    Args:
        d_input: input width D.
        d_hidden: state and output width H.
    """

    def __init__(self, d_input: int, d_hidden: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(d_input, d_hidden)
        self.d_hidden = d_hidden

    def init_state(self, batch_size: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(batch_size, self.d_hidden, device=device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.cell(x_t, state)
        return state, state

    def forward(
        self, x: torch.Tensor, resets: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.init_state(x.shape[0], x.device) if state is None else state
        keep = (~resets).to(x.dtype).unsqueeze(-1)
        outputs = []
        for x_t, keep_t in zip(x.unbind(1), keep.unbind(1)):
            h = self.cell(x_t, h * keep_t)
            outputs.append(h)
        return torch.stack(outputs, 1), h


def _reset_rows(state: Any, rows: torch.Tensor) -> Any:
    """Zero the batch rows ``rows`` (B,) bool of every tensor in a (nested) state."""
    if isinstance(state, torch.Tensor):
        keep = (~rows).to(state.dtype if not state.is_complex() else torch.float32)
        return state * keep.reshape(-1, *([1] * (state.dim() - 1)))
    if isinstance(state, (list, tuple)):
        return type(state)(_reset_rows(s, rows) for s in state)
    if isinstance(state, dict):
        return {k: _reset_rows(v, rows) for k, v in state.items()}
    if hasattr(state, "__dataclass_fields__"):
        fields = {f: _reset_rows(getattr(state, f), rows) for f in state.__dataclass_fields__}
        return type(state)(**fields)
    return state


class GLUMixer(nn.Module):
    """An SSM mixer followed by R2I's per-layer MLP: ``y = GLU(W · GELU(ssm(x)))``.

    R2I's S3M layer (Samsami et al., ICLR 2024, arXiv 2403.04253; REFERENCES.md "R2I": "S5-style
    MIMO SSM layers ... GLU MLP, LayerNorm") puts a gated nonlinearity after every S5 layer; a
    bare S5 stack is linear in its inputs between the norms. State, resets and ``step`` pass
    through to the wrapped mixer unchanged.

    Args:
        mixer: a sequence mixer with the ssmkit interface (``forward``/``step``/``init_state``).
        d_model: its width D.
    """

    def __init__(self, mixer: nn.Module, d_model: int) -> None:
        super().__init__()
        self.mixer = mixer
        self.d_model = d_model
        self.glu = nn.Linear(d_model, 2 * d_model)

    def _mlp(self, y: torch.Tensor) -> torch.Tensor:
        return F.glu(self.glu(F.gelu(y)), dim=-1)

    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Any:
        return self.mixer.init_state(batch_size, device, dtype)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        out = self.mixer(x, **kwargs)
        if kwargs.get("return_state", False):
            return self._mlp(out[0]), out[1]
        return self._mlp(out)

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y, state = self.mixer.step(x_t, state)
        return self._mlp(y), state


class SSMCore(nn.Module):
    """ssmkit SSM stack as a world-model sequence model (R2I's "S3M" / Drama's Mamba-2 core).

    Args:
        d_input: input width D.
        d_hidden: width H of the stack (and of its output).
        mixer: ``"s5"``, ``"mamba"`` or ``"mamba2"`` (any mixer name ``SequenceBackbone`` knows).
        n_layers: number of residual SSM layers.
        mixer_kwargs: passed to each mixer (e.g. ``d_state``).
        glu: follow every SSM layer with R2I's GELU + GLU MLP (:class:`GLUMixer`).
    """

    def __init__(
        self,
        d_input: int,
        d_hidden: int,
        mixer: str = "s5",
        n_layers: int = 2,
        mixer_kwargs: dict[str, Any] | None = None,
        glu: bool = False,
    ) -> None:
        super().__init__()
        from ssmkit.core import SequenceBackbone
        from ssmkit.core.residual import build_mixer

        self.d_hidden = d_hidden
        self.input = nn.Linear(d_input, d_hidden)
        kwargs = dict(mixer_kwargs or {})
        layer: Any = mixer
        if glu:

            def layer(index: int) -> nn.Module:
                return GLUMixer(build_mixer(mixer, d_hidden, index, kwargs), d_hidden)

        self.backbone = SequenceBackbone(
            d_model=d_hidden, n_layers=n_layers, mixer=layer, mixer_kwargs=kwargs
        )

    def init_state(self, batch_size: int, device: torch.device | None = None) -> Any:
        return self.backbone.init_state(batch_size, device=device)

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.backbone.step(self.input(x_t), state)

    def forward(
        self, x: torch.Tensor, resets: torch.Tensor, state: Any = None
    ) -> tuple[torch.Tensor, Any]:
        return self.backbone(self.input(x), state=state, resets=resets, return_state=True)


def reset_state(core: nn.Module, state: Any, is_first: torch.Tensor) -> Any:
    """The state with rows where ``is_first`` (B,) set back to the initial (zero) state."""
    return _reset_rows(state, is_first)
