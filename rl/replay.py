"""Sequence replay with ``is_first`` flags, and a collector for gymnasium vector envs.

Step convention (DreamerV3): the record at time t holds ``obs_t``, the ``reward_t`` that arrived
with it, ``is_first_t`` (first observation of an episode), ``is_terminal_t`` (the episode
terminated at ``obs_t``: stop bootstrapping) and ``action_t`` (the action then taken from
``obs_t``). Sampled windows may cross episode boundaries; ``is_first`` marks where a sequence
model must reset its state.

Gymnasium 1.x vector envs autoreset on the *next* step (``AutoresetMode.NEXT_STEP``): the step
after a sub-env finished ignores its action and returns the reset observation with reward 0. The
collector turns that step into ``is_first = True, reward = 0``, so no reward leaks across episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

FIELDS = ("obs", "action", "reward", "is_first", "is_terminal")


class SequenceReplay:
    """Ring buffer of lock-step streams from ``num_envs`` environments.

    Args:
        capacity: steps kept per environment (oldest dropped first).
        obs_dim: observation size O, or an observation shape such as an image's (C, H, W).
        action_dim: action size A (one-hot for discrete actions).
        num_envs: number of parallel streams E.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int | tuple[int, ...],
        action_dim: int,
        num_envs: int = 1,
    ) -> None:
        if capacity < 2 or num_envs < 1:
            raise ValueError(
                f"capacity must be >= 2 and num_envs >= 1, got {capacity}, {num_envs}."
            )
        obs_shape = (int(obs_dim),) if isinstance(obs_dim, int) else tuple(int(d) for d in obs_dim)
        if not obs_shape or min(obs_shape) < 1:
            raise ValueError(f"obs_dim must be a size O or a shape of sizes >= 1, got {obs_dim!r}.")
        self.capacity, self.num_envs, self.obs_shape = int(capacity), int(num_envs), obs_shape
        self.data = {
            "obs": torch.zeros(capacity, num_envs, *obs_shape),
            "action": torch.zeros(capacity, num_envs, action_dim),
            "reward": torch.zeros(capacity, num_envs),
            "is_first": torch.zeros(capacity, num_envs, dtype=torch.bool),
            "is_terminal": torch.zeros(capacity, num_envs, dtype=torch.bool),
        }
        self.size = 0
        self.next_index = 0

    def __len__(self) -> int:
        """Number of stored steps over all environments."""
        return self.size * self.num_envs

    def add(self, **step: torch.Tensor | np.ndarray) -> None:
        """Append one lock-step: each field (``FIELDS``) with leading dim ``num_envs``."""
        missing = set(FIELDS) - set(step)
        if missing:
            raise ValueError(
                f"SequenceReplay.add needs fields {FIELDS}; missing {sorted(missing)}."
            )
        for name in FIELDS:
            value = torch.as_tensor(np.asarray(step[name]))
            target = self.data[name][self.next_index]
            if value.shape != target.shape:
                raise ValueError(
                    f"SequenceReplay.add: field {name!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(target.shape)}."
                )
            target.copy_(value)
        self.next_index = (self.next_index + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(
        self, batch_size: int, seq_len: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``batch_size`` windows of ``seq_len`` consecutive steps: each field (B, T, ...)."""
        if seq_len > self.size:
            raise ValueError(
                f"Cannot sample windows of {seq_len} steps: only {self.size} stored per env."
            )
        oldest = (self.next_index - self.size) % self.capacity
        starts = torch.randint(0, self.size - seq_len + 1, (batch_size,), generator=generator)
        envs = torch.randint(0, self.num_envs, (batch_size,), generator=generator)
        steps = (oldest + starts[:, None] + torch.arange(seq_len)[None]) % self.capacity
        batch = {name: value[steps, envs[:, None]] for name, value in self.data.items()}
        # The first step of a window has no stored predecessor: the sequence model starts there.
        batch["is_first"][:, 0] = True
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "data": {k: v.clone() for k, v in self.data.items()},
            "size": self.size,
            "next_index": self.next_index,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state["data"].items():
            if value.shape != self.data[name].shape:
                raise ValueError(
                    f"Replay checkpoint field {name!r} has shape {tuple(value.shape)}, expected {tuple(self.data[name].shape)}."
                )
            self.data[name].copy_(value)
        self.size, self.next_index = int(state["size"]), int(state["next_index"])


Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class VectorCollector:
    """Steps a gymnasium ``VectorEnv`` (NEXT_STEP autoreset) and writes ``SequenceReplay`` records.

    Args:
        envs: the vector env with a ``Discrete`` action space per sub-env.
        replay: where steps go (``num_envs`` must match).
        seed: seed for the first ``reset``.
    """

    def __init__(self, envs: Any, replay: SequenceReplay, seed: int | None = None) -> None:
        if replay.num_envs != envs.num_envs:
            raise ValueError(
                f"replay has {replay.num_envs} streams but the vector env has {envs.num_envs}."
            )
        self.envs, self.replay = envs, replay
        self.num_actions = int(envs.single_action_space.n)
        obs, _ = envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.is_first = torch.ones(envs.num_envs, dtype=torch.bool)
        self.reward = torch.zeros(envs.num_envs)
        self.is_terminal = torch.zeros(envs.num_envs, dtype=torch.bool)
        self.is_truncated = torch.zeros(envs.num_envs, dtype=torch.bool)
        self._episode_return = torch.zeros(envs.num_envs)
        self.finished_returns: list[float] = []
        self.env_steps = 0

    def step(self, policy: Policy) -> None:
        """One lock-step: ``policy(obs (E, O), is_first (E,)) -> actions (E,)`` int."""
        actions = policy(self.obs, self.is_first).long()
        self.replay.add(
            obs=self.obs,
            action=torch.nn.functional.one_hot(actions, self.num_actions).float(),
            reward=self.reward,
            is_first=self.is_first,
            is_terminal=self.is_terminal,
        )
        done_before = self.is_terminal | self.is_truncated
        obs, reward, terminated, truncated, _ = self.envs.step(actions.numpy())
        self.env_steps += self.envs.num_envs
        reward = torch.as_tensor(reward, dtype=torch.float32)
        terminated = torch.as_tensor(terminated, dtype=torch.bool)
        truncated = torch.as_tensor(truncated, dtype=torch.bool)
        # Sub-envs that finished on the previous step were reset by this one (action ignored).
        self.is_first = done_before
        self.reward = torch.where(done_before, torch.zeros_like(reward), reward)
        self.is_terminal = terminated & ~done_before
        self.is_truncated = truncated & ~done_before
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self._episode_return = (
            torch.where(done_before, torch.zeros_like(reward), self._episode_return) + self.reward
        )
        for index in torch.nonzero(self.is_terminal | self.is_truncated).flatten().tolist():
            self.finished_returns.append(float(self._episode_return[index]))
