"""Registry entries: ``rl.world_model_{s5,mamba,mamba2,gru,mlp}`` (vector observations)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ssmkit.core.registry import register_model
from ssmkit.rl.world_model import SSMWorldModel

_TINY = {"obs_dim": 5, "num_actions": 3, "d_hidden": 16, "stoch": 4, "classes": 4}


def _example(model: SSMWorldModel) -> tuple[torch.Tensor, ...]:
    is_first = torch.zeros(2, 7, dtype=torch.bool)
    is_first[:, 0] = is_first[1, 3] = True
    actions = F.one_hot(torch.randint(model.num_actions, (2, 7)), model.num_actions).float()
    return torch.randn(2, 7, model.obs_dim), actions, is_first


def _factory(sequence_model: str, defaults: dict[str, Any]) -> Any:
    def build(**kwargs: Any) -> SSMWorldModel:
        return SSMWorldModel(
            **{
                "obs_dim": 4,
                "num_actions": 2,
                "sequence_model": sequence_model,
                **defaults,
                **kwargs,
            }
        )

    build.__doc__ = f"R2I-style world model with a {sequence_model} sequence model."
    build.__qualname__ = f"world_model_{sequence_model}"
    return build


for _name, _defaults, _tiny in (
    ("s5", {"mixer_kwargs": {"d_state": 32}}, {"mixer_kwargs": {"d_state": 8}}),
    ("mamba", {"mixer_kwargs": {"d_state": 16}}, {"mixer_kwargs": {"d_state": 8}}),
    (
        "mamba2",
        {"mixer_kwargs": {"d_state": 16, "headdim": 16, "chunk_size": 64}},
        {"mixer_kwargs": {"d_state": 8, "headdim": 8, "chunk_size": 4}},
    ),
    ("gru", {}, {}),
    ("mlp", {}, {}),
):
    register_model(f"rl.world_model_{_name}", tiny={**_TINY, **_tiny}, example_inputs=_example)(
        _factory(_name, _defaults)
    )
