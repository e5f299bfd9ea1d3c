"""Recurrent state containers shared by every sequence mixer.

A mixer's ``init_state`` returns one of these dataclasses; ``forward(..., state=...,
return_state=True)`` and ``step`` take and return it. Every tensor field has the batch as its
first dimension, so :meth:`SSMState.index` selects sequences (continuous batching: drop finished
requests, reorder beams) and :meth:`SSMState.to` moves the whole state between devices. Fields may
also be nested states, or lists/tuples of states (one per layer), or ``None``.

Mixers of other families subclass :class:`SSMState` the same way::

    @dataclass
    class S5State(SSMState):
        ssm: torch.Tensor  # (B, P) complex64
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

StateT = TypeVar("StateT", bound="SSMState")


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, SSMState):
        return value._apply(fn)
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    return value


@dataclass
class SSMState:
    """Base of all recurrent states: batch-first tensor fields, nested states allowed."""

    def _apply(self: StateT, fn: Any) -> StateT:
        changes = {f.name: _map(getattr(self, f.name), fn) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **changes)

    def index(self: StateT, batch_idx: torch.Tensor | slice | int | list[int]) -> StateT:
        """A new state holding the selected sequences of the batch.

        Args:
            batch_idx: integer index tensor / list, bool mask ``(B,)`` or slice; an int keeps the
                batch dimension (size 1).
        """
        if isinstance(batch_idx, int):
            batch_idx = [batch_idx]
        if isinstance(batch_idx, list):
            batch_idx = torch.as_tensor(batch_idx, dtype=torch.long)

        def select(t: torch.Tensor) -> torch.Tensor:
            idx = batch_idx.to(t.device) if isinstance(batch_idx, torch.Tensor) else batch_idx
            return t[idx]

        return self._apply(select)

    def to(self: StateT, device: torch.device | str) -> StateT:
        """A copy on ``device`` (dtypes kept: SSM states stay fp32 / complex64)."""
        return self._apply(lambda t: t.to(device))

    def detach(self: StateT) -> StateT:
        """A copy cut from the autograd graph (truncated backpropagation through time)."""
        return self._apply(lambda t: t.detach())

    def masked_reset(self: StateT, done: torch.Tensor) -> StateT:
        """Zero the state of the sequences where ``done`` ``(B,)`` is True (episode starts)."""

        def reset(t: torch.Tensor) -> torch.Tensor:
            keep = (~done.to(device=t.device, dtype=torch.bool)).reshape(-1, *([1] * (t.dim() - 1)))
            return t * keep.to(t.dtype)

        return self._apply(reset)

    @property
    def batch_size(self) -> int:
        """The batch size (first dimension of the first tensor field)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                return value.shape[0]
            if isinstance(value, SSMState):
                return value.batch_size
            if isinstance(value, (list, tuple)):
                for v in value:
                    if isinstance(v, SSMState):
                        return v.batch_size
                    if isinstance(v, torch.Tensor):
                        return v.shape[0]
        raise ValueError(f"{type(self).__name__} holds no tensor, so it has no batch size.")


@dataclass
class ConvSSMState(SSMState):
    """State of a Mamba-style mixer: short-conv window and SSM state.

    Attributes:
        conv: ``(B, C, d_conv - 1)``: the last ``d_conv - 1`` conv inputs (oldest first).
        ssm: SSM state, fp32: ``(B, E, N)`` for Mamba, ``(B, H, P, N)`` for Mamba-2.
    """

    conv: torch.Tensor
    ssm: torch.Tensor


@dataclass
class StackState(SSMState):
    """States of a layer stack, one entry per layer (``None`` for stateless layers)."""

    layers: list[Any]


def check_state(state: Any, expected: type, owner: str) -> None:
    """Raise a ``TypeError`` when ``state`` is not an ``expected`` instance."""
    if not isinstance(state, expected):
        raise TypeError(
            f"{owner}: state must be a {expected.__name__} (from `init_state` or "
            f"`forward(..., return_state=True)`), got {type(state).__name__}."
        )


def check_sequence_inputs(
    owner: str,
    x: Any,
    d_model: int,
    mask: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
) -> None:
    """Validate a mixer's ``(B, L, D)`` input and its optional ``(B, L)`` mask / resets.

    Raises:
        TypeError: ``x`` is not a floating tensor, or mask / resets are not bool tensors.
        ValueError: wrong rank or width, or mask / resets not of shape ``(B, L)``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{owner}: x must be a floating tensor (B, L, D), got {_describe(x)}.")
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(
            f"{owner}: x must have shape (B, L, D={d_model}), got {tuple(x.shape)}. "
            "Reshape to (batch, length, d_model)."
        )
    for name, flags in (("mask", mask), ("resets", resets)):
        if flags is None:
            continue
        if not isinstance(flags, torch.Tensor) or flags.dtype != torch.bool:
            raise TypeError(
                f"{owner}: {name} must be a bool tensor (B, L), got {_describe(flags)}; "
                f"pass `{name}.bool()`."
            )
        if tuple(flags.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{owner}: {name} must have shape (B, L) = {tuple(x.shape[:2])}, "
                f"got {tuple(flags.shape)}."
            )


def check_step_input(owner: str, x: Any, d_model: int) -> None:
    """Validate a ``step`` input ``(B, D)``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{owner}: x_t must be a floating tensor (B, D), got {_describe(x)}.")
    if x.dim() != 2 or x.shape[-1] != d_model:
        raise ValueError(
            f"{owner}: step takes one token per sequence, x_t of shape (B, D={d_model}), got "
            f"{tuple(x.shape)}. For a (B, L, D) chunk call forward(x, state=state, "
            "return_state=True)."
        )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def check_causal(owner: str, bidirectional: bool, what: str) -> None:
    """Raise if a bidirectional layer is asked for something only a causal one has (state, step)."""
    if bidirectional:
        raise ValueError(
            f"{owner}: {what} needs a causal layer, but this one is bidirectional (its output "
            "depends on future inputs). Build it with bidirectional=False."
        )
