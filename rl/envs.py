"""Memory tasks that run fast on CPU, registered with gymnasium.

``TMaze`` (Bakker, "Reinforcement Learning with Long Short-Term Memory", NeurIPS 2001, passive
variant): a cue shown only at the first step says which arm of a T-junction is rewarded; the agent
is carried down a corridor of ``corridor_length`` steps and must choose at the junction. A
memoryless policy can do no better than chance (expected return 0), a policy that remembers the
cue for ``corridor_length`` steps earns +1 (``PixelTMaze``: the same task seen as a small RGB
image, for CNN encoders). ``MaskedCartPole`` is CartPole with the velocities
hidden (the classic POMDP of Wierstra et al., "Recurrent Policy Gradients", 2010, and POPGym's
"Stateless CartPole"): a policy must infer them from the history of positions. POPGym's tasks (``popgym-RepeatPreviousEasy-v0``, ...)
are used beside it when the ``popgym`` package is installed.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

TMAZE_ID = "ssmkit/TMaze-v0"
MASKED_CARTPOLE_ID = "ssmkit/MaskedCartPole-v0"
PIXEL_TMAZE_ID = "ssmkit/PixelTMaze-v0"


class TMaze(gym.Env[np.ndarray, np.int64]):
    """Passive T-maze with a cue at t = 0 and a decision after ``corridor_length`` steps.

    Observation (4,) float32: ``[cue_left, cue_right, in_corridor, at_junction]``.
    Actions: 0 = left, 1 = right (ignored in the corridor). Reward: +1 for the cued arm, -1 for
    the other, 0 in the corridor. The episode terminates after the decision, so it lasts
    ``corridor_length + 1`` steps.

    Args:
        corridor_length: steps between the cue and the junction (the memory length), >= 1.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, corridor_length: int = 5) -> None:
        if int(corridor_length) < 1:
            raise ValueError(f"corridor_length must be >= 1, got {corridor_length}.")
        self.corridor_length = int(corridor_length)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._goal = 0
        self._position = 0

    def _observation(self) -> np.ndarray:
        obs = np.zeros(4, dtype=np.float32)
        if self._position == 0:
            obs[self._goal] = 1.0
        if self._position < self.corridor_length:
            obs[2] = 1.0
        else:
            obs[3] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._goal = int(self.np_random.integers(2))
        self._position = 0
        return self._observation(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"TMaze action must be 0 (left) or 1 (right), got {action!r}.")
        if self._position < self.corridor_length:
            self._position += 1
            return self._observation(), 0.0, False, False, {}
        reward = 1.0 if int(action) == self._goal else -1.0
        return self._observation(), reward, True, False, {}


class PixelTMaze(TMaze):
    """``TMaze`` seen as a small RGB image: (size, size, 3) uint8, HWC as gymnasium images are.

    Each of the four ``TMaze`` features lights one quadrant (cue left: top-left red, cue right:
    top-right red, corridor: bottom-left green, junction: bottom-right blue), so the task and its
    memory length are ``TMaze``'s while the agent must use a CNN encoder.

    Args:
        corridor_length: as in ``TMaze``.
        size: image side (even, >= 8).
    """

    _QUADRANTS = ((0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 2))  # (row, col, channel) per feature

    def __init__(self, corridor_length: int = 5, size: int = 16) -> None:
        super().__init__(corridor_length)
        if int(size) < 8 or int(size) % 2:
            raise ValueError(f"size must be even and >= 8, got {size}.")
        self.size = int(size)
        self.observation_space = spaces.Box(0, 255, shape=(self.size, self.size, 3), dtype=np.uint8)

    def _observation(self) -> np.ndarray:  # type: ignore[override]
        features = super()._observation()
        image = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        half = self.size // 2
        for value, (row, col, channel) in zip(features, self._QUADRANTS):
            if value:
                image[row * half : (row + 1) * half, col * half : (col + 1) * half, channel] = 255
        return image


class MaskedCartPole(gym.Env[np.ndarray, np.int64]):
    """CartPole-v1 that shows only cart position and pole angle; velocities must be remembered.

    Observation (2,) float32 ``[x, theta]``; actions 0 = push left, 1 = push right; reward +1 per
    step; terminates when the pole falls or the cart leaves the track (gymnasium's CartPole
    dynamics), truncated at 500 steps by the registration.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    _VISIBLE = (0, 2)

    def __init__(self) -> None:
        from gymnasium.envs.classic_control.cartpole import CartPoleEnv

        self._env = CartPoleEnv()
        full = self._env.observation_space
        index = list(self._VISIBLE)
        self.observation_space = spaces.Box(full.low[index], full.high[index], dtype=np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=int(self.np_random.integers(2**31)), options=options)
        return obs[list(self._VISIBLE)].astype(np.float32), info

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"MaskedCartPole action must be 0 or 1, got {action!r}.")
        obs, reward, terminated, truncated, info = self._env.step(int(action))
        return (
            obs[list(self._VISIBLE)].astype(np.float32),
            float(reward),
            terminated,
            truncated,
            info,
        )


def register_envs() -> None:
    """Register ssmkit's tasks with gymnasium (idempotent); also registers POPGym's if installed."""
    if TMAZE_ID not in gym.registry:
        gym.register(TMAZE_ID, entry_point=TMaze, kwargs={"corridor_length": 5})
    if PIXEL_TMAZE_ID not in gym.registry:
        gym.register(PIXEL_TMAZE_ID, entry_point=PixelTMaze, kwargs={"corridor_length": 5})
    if MASKED_CARTPOLE_ID not in gym.registry:
        gym.register(MASKED_CARTPOLE_ID, entry_point=MaskedCartPole, max_episode_steps=500)
    try:
        import popgym  # noqa: F401  (registers popgym-* ids on import)
    except ImportError:
        pass


register_envs()
