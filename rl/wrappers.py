"""Gymnasium wrappers for SSM agents: one-hot observations, action repeat, and ``make_env``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ssmkit.rl.envs import register_envs


class OneHotObservation(gym.ObservationWrapper[np.ndarray, Any, Any]):
    """Discrete / MultiDiscrete observations as a float32 one-hot vector (concatenated per part)."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        space = env.observation_space
        if isinstance(space, spaces.Discrete):
            self._sizes = [int(space.n)]
            self._starts = [int(space.start)]
        elif isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1:
            self._sizes = [int(n) for n in space.nvec]
            self._starts = [int(s) for s in space.start]
        else:
            raise TypeError(
                f"OneHotObservation needs a Discrete or 1-D MultiDiscrete observation space, got "
                f"{space}. Leave Box observations unwrapped."
            )
        self._offsets = np.cumsum([0, *self._sizes[:-1]])
        self.observation_space = spaces.Box(0.0, 1.0, shape=(sum(self._sizes),), dtype=np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        values = np.atleast_1d(np.asarray(observation, dtype=np.int64)) - np.asarray(self._starts)
        out = np.zeros(self.observation_space.shape, dtype=np.float32)
        out[self._offsets + values] = 1.0
        return out


class ImageObservation(gym.ObservationWrapper[np.ndarray, Any, Any]):
    """uint8 images (H, W, C) (gymnasium's layout) as float32 (C, H, W) in [0, 1], the layout
    and range of the world model's CNN encoder (DreamerV3 feeds pixels / 255)."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not (
            isinstance(space, spaces.Box)
            and space.dtype == np.uint8
            and len(space.shape) == 3
            and space.shape[-1] in (1, 3, 4)
        ):
            raise TypeError(
                f"ImageObservation needs a uint8 Box (H, W, C) with C in (1, 3, 4), got {space}."
            )
        height, width, channels = space.shape
        self.observation_space = spaces.Box(
            0.0, 1.0, shape=(channels, height, width), dtype=np.float32
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(observation, -1, 0), dtype=np.float32) / 255.0


class ActionRepeat(gym.Wrapper[Any, Any, Any, Any]):
    """Repeat each action ``repeat`` times, summing rewards and stopping at episode end."""

    def __init__(self, env: gym.Env[Any, Any], repeat: int) -> None:
        if int(repeat) < 1:
            raise ValueError(f"ActionRepeat needs repeat >= 1, got {repeat}.")
        super().__init__(env)
        self.repeat = int(repeat)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def make_env(
    env_id: str, *, action_repeat: int = 1, normalize_observations: bool = False, **kwargs: Any
) -> gym.Env[np.ndarray, Any]:
    """A gymnasium env with float vector or (C, H, W) image observations, ready for a world model.

    Discrete observations become one-hot vectors; uint8 (H, W, C) images become float (C, H, W)
    in [0, 1] (:class:`ImageObservation`); ``action_repeat`` > 1 repeats actions;
    ``normalize_observations`` applies gymnasium's running mean/std normalisation.
    """
    register_envs()
    if env_id not in gym.registry:
        close = [name for name in gym.registry if env_id.lower() in name.lower()][:8]
        raise ValueError(f"Unknown gymnasium id {env_id!r}. Similar registered ids: {close}.")
    env = gym.make(env_id, **kwargs)
    if isinstance(env.observation_space, (spaces.Discrete, spaces.MultiDiscrete)):
        env = OneHotObservation(env)
    space = env.observation_space
    if isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3:
        env = ImageObservation(env)
    if not isinstance(env.observation_space, spaces.Box):
        raise TypeError(f"{env_id}: observation space {env.observation_space} is not supported.")
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    if normalize_observations:
        env = gym.wrappers.NormalizeObservation(env)
    return env
