"""Training loop for ``DreamerAgent`` on gymnasium vector envs, with exact resume.

``train(RLConfig(...))`` collects with the agent's recurrent policy, trains at a fixed ratio of
updates per environment step, evaluates greedily every ``eval_every`` env steps, logs to
``metrics.csv`` (and TensorBoard event files under ``tensorboard/`` when the ``tensorboard``
package is installed) and writes an atomic checkpoint (weights, optimisers, replay, environments, RNG
states) from which training continues bit-for-bit.
"""

from __future__ import annotations

import csv
import os
import pickle
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmkit.core.files import atomic_output, save_figure_atomic
from ssmkit.rl.agent import DreamerAgent
from ssmkit.rl.replay import SequenceReplay, VectorCollector
from ssmkit.rl.world_model import SSMWorldModel


@dataclass
class RLConfig:
    """One run: environment, world model, budget. Defaults fit a 2-core CPU."""

    env_id: str = "ssmkit/TMaze-v0"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    world_model: str = "s5"
    world_model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_envs: int = 8
    total_env_steps: int = 20_000
    prefill_env_steps: int = 1_000
    updates_per_lockstep: float = 0.25
    batch_size: int = 16
    seq_len: int = 32
    d_hidden: int = 64
    n_layers: int = 2
    horizon: int = 15
    replay_capacity: int = 20_000
    eval_every: int = 2_000
    eval_episodes: int = 32
    checkpoint_every: int = 5_000
    seed: int = 0
    out_dir: str | None = None
    tensorboard: bool = True


def build_agent(config: RLConfig, obs_dim: int | tuple[int, ...], num_actions: int) -> DreamerAgent:
    """``obs_dim``: vector size O, or an image shape (C, H, W) (CNN encoder and decoder)."""
    world_model = SSMWorldModel(
        obs_dim,
        num_actions,
        sequence_model=config.world_model,
        d_hidden=config.d_hidden,
        n_layers=config.n_layers,
        **config.world_model_kwargs,
    )
    return DreamerAgent(world_model, d_hidden=config.d_hidden, horizon=config.horizon)


class Trainer:
    """Owns envs, replay, agent and counters; ``run()`` trains until the budget is spent."""

    def __init__(self, config: RLConfig) -> None:
        import gymnasium as gym

        from ssmkit.rl.wrappers import make_env

        self.config = config
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.envs = gym.vector.SyncVectorEnv(
            [lambda: make_env(config.env_id, **config.env_kwargs)] * config.num_envs
        )
        self.eval_env = make_env(config.env_id, **config.env_kwargs)
        shape = tuple(self.envs.single_observation_space.shape)
        obs_dim: int | tuple[int, ...] = shape[0] if len(shape) == 1 else shape
        num_actions = int(self.envs.single_action_space.n)
        self.agent = build_agent(config, obs_dim, num_actions)
        capacity = max(config.seq_len + 1, config.replay_capacity // config.num_envs)
        self.replay = SequenceReplay(capacity, obs_dim, num_actions, config.num_envs)
        self.collector = VectorCollector(self.envs, self.replay, seed=config.seed)
        self.sample_generator = torch.Generator().manual_seed(config.seed)
        self.act_state = None
        self.update_credit = 0.0
        self.updates = 0
        self.history: list[dict[str, float]] = []

    def _policy(self, obs: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        action, self.act_state = self.agent.act(obs, is_first, self.act_state)
        if self.collector.env_steps < self.config.prefill_env_steps:
            return torch.randint(0, self.agent.num_actions, (obs.shape[0],))
        return action

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean greedy return over ``eval_episodes`` episodes of a separate env."""
        returns = []
        for episode in range(self.config.eval_episodes):
            obs, _ = self.eval_env.reset(seed=10_000 + episode)
            state, first, total, done = None, True, 0.0, False
            while not done:
                obs_t = torch.as_tensor(obs, dtype=torch.float32)[None]
                action, state = self.agent.act(obs_t, torch.tensor([first]), state, greedy=True)
                obs, reward, terminated, truncated, _ = self.eval_env.step(action.item())
                total, first, done = total + float(reward), False, terminated or truncated
            returns.append(total)
        return float(np.mean(returns))

    def lockstep(self) -> dict[str, float]:
        """Collect one step in every env and train at the configured ratio."""
        self.collector.step(self._policy)
        metrics: dict[str, float] = {}
        if (
            self.collector.env_steps >= self.config.prefill_env_steps
            and self.replay.size > self.config.seq_len
        ):
            self.update_credit += self.config.updates_per_lockstep
            while self.update_credit >= 1.0:
                batch = self.replay.sample(
                    self.config.batch_size, self.config.seq_len, self.sample_generator
                )
                metrics = self.agent.train_step(batch)
                self.updates += 1
                self.update_credit -= 1.0
        return metrics

    def run(self, progress: bool = True) -> list[dict[str, float]]:
        from tqdm.auto import tqdm

        config = self.config
        bar = tqdm(
            total=config.total_env_steps,
            initial=self.collector.env_steps,
            disable=not progress,
            desc=f"{config.world_model} {config.env_id}",
        )
        next_eval = (self.collector.env_steps // config.eval_every + 1) * config.eval_every
        next_ckpt = (
            self.collector.env_steps // config.checkpoint_every + 1
        ) * config.checkpoint_every
        while self.collector.env_steps < config.total_env_steps:
            metrics = self.lockstep()
            bar.update(config.num_envs)
            if self.collector.env_steps >= next_eval:
                next_eval += config.eval_every
                row = {
                    "env_steps": self.collector.env_steps,
                    "updates": self.updates,
                    "eval_return": self.evaluate(),
                    **metrics,
                }
                self.history.append(row)
                bar.set_postfix(eval_return=f"{row['eval_return']:.2f}")
                self._log(row)
            if config.out_dir and self.collector.env_steps >= next_ckpt:
                next_ckpt += config.checkpoint_every
                self.save(Path(config.out_dir) / "checkpoint.pt")
        bar.close()
        if getattr(self, "_writer", None) is not None:
            self._writer.close()
            self._writer = None
        if config.out_dir:
            self.save(Path(config.out_dir) / "checkpoint.pt")
            plot_learning_curve(
                self.history,
                Path(config.out_dir) / "learning_curve.png",
                title=f"{config.world_model} on {config.env_id}",
            )
        return self.history

    def _tensorboard(self, row: dict[str, float]) -> None:
        """Scalars of ``row`` to ``out_dir/tensorboard`` at step ``env_steps`` (lazy writer)."""
        if getattr(self, "_writer", None) is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                import warnings

                warnings.warn(
                    "tensorboard is not installed: logging to metrics.csv only "
                    "(pip install tensorboard, or RLConfig(tensorboard=False)).",
                    stacklevel=3,
                )
                self.config.tensorboard = False
                return
            self._writer = SummaryWriter(str(Path(self.config.out_dir) / "tensorboard"))
        for key, value in row.items():
            if key != "env_steps" and isinstance(value, (int, float)):
                self._writer.add_scalar(key, value, global_step=int(row["env_steps"]))
        self._writer.flush()

    def _log(self, row: dict[str, float]) -> None:
        if not self.config.out_dir:
            return
        if self.config.tensorboard:
            self._tensorboard(row)
        path = Path(self.config.out_dir) / "metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=["env_steps", "updates", "eval_return"], extrasaction="ignore"
            )
            if new:
                writer.writeheader()
            writer.writerow(row)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomic checkpoint of the whole training state (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "config": asdict(self.config),
            "training": self.agent.training_state(),
            "replay": self.replay.state_dict(),
            # Vector env and collector internals (sub-envs, RNGs, autoreset flags), minus the
            # env factories (lambdas), which the resuming Trainer rebuilds from the config.
            "envs": pickle.dumps({k: v for k, v in vars(self.envs).items() if k != "env_fns"}),
            "collector": pickle.dumps(
                {k: v for k, v in vars(self.collector).items() if k not in ("envs", "replay")}
            ),
            "act_state": self.act_state,
            "counters": {"update_credit": self.update_credit, "updates": self.updates},
            "history": self.history,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "sample": self.sample_generator.get_state(),
            },
        }
        with atomic_output(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **overrides: Any) -> Trainer:
        """Resume from :meth:`save` (this file is trusted: it holds pickled environments)."""
        state = torch.load(path, weights_only=False)
        trainer = cls(RLConfig(**{**state["config"], **overrides}))
        trainer.agent.load_training_state(state["training"])
        trainer.replay.load_state_dict(state["replay"])
        vars(trainer.envs).update(pickle.loads(state["envs"]))
        vars(trainer.collector).update(pickle.loads(state["collector"]))
        trainer.act_state = state["act_state"]
        trainer.update_credit, trainer.updates = (
            state["counters"]["update_credit"],
            state["counters"]["updates"],
        )
        trainer.history = state["history"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        trainer.sample_generator.set_state(state["rng"]["sample"])
        return trainer


def plot_learning_curve(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    """Eval return against env steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([h["env_steps"] for h in history], [h["eval_return"] for h in history], marker="o")
    ax.set(xlabel="environment steps", ylabel="greedy eval return", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


def train(config: RLConfig, progress: bool = True) -> list[dict[str, float]]:
    """Train from scratch with ``config``; returns the evaluation history."""
    return Trainer(config).run(progress=progress)
