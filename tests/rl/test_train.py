"""Training loop: runs, evaluates, checkpoints atomically, and resumes bit-for-bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")

from ssmkit.rl.agent import lambda_returns
from ssmkit.rl.train import RLConfig, Trainer


def _config(tmp_path: Path) -> RLConfig:
    return RLConfig(
        world_model="gru",
        env_kwargs={"corridor_length": 2},
        num_envs=2,
        total_env_steps=120,
        prefill_env_steps=20,
        updates_per_lockstep=1.0,
        batch_size=4,
        seq_len=8,
        d_hidden=16,
        horizon=4,
        eval_every=60,
        eval_episodes=2,
        checkpoint_every=10_000,
        out_dir=str(tmp_path),
    )


def test_lambda_returns_match_the_recursion() -> None:
    reward = torch.tensor([[1.0, 0.0, 2.0]])
    value = torch.tensor([[0.5, 1.0, 1.5, 3.0]])
    discount = torch.full((1, 3), 0.9)
    lam = 0.8
    r2 = 2.0 + 0.9 * 3.0
    r1 = 0.0 + 0.9 * ((1 - lam) * 1.5 + lam * r2)
    r0 = 1.0 + 0.9 * ((1 - lam) * 1.0 + lam * r1)
    torch.testing.assert_close(
        lambda_returns(reward, value, discount, lam), torch.tensor([[r0, r1, r2]])
    )


def test_resume_reproduces_the_next_updates_exactly(tmp_path: Path) -> None:
    trainer = Trainer(_config(tmp_path))
    for _ in range(30):
        trainer.lockstep()
    trainer.save(tmp_path / "mid.pt")
    for _ in range(10):
        trainer.lockstep()
    expected = {k: v.clone() for k, v in trainer.agent.state_dict().items()}

    resumed = Trainer.load(tmp_path / "mid.pt")
    for _ in range(10):
        resumed.lockstep()
    assert resumed.updates == trainer.updates > 0
    for name, value in resumed.agent.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_run_writes_metrics_checkpoint_and_plot(tmp_path: Path) -> None:
    history = Trainer(_config(tmp_path)).run(progress=False)
    assert [row["env_steps"] for row in history] == [60, 120]
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "checkpoint.pt.tmp").exists()
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    if importlib.util.find_spec("tensorboard") is not None:
        events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 100


def test_image_env_trains_end_to_end_with_a_cnn_world_model(tmp_path: Path) -> None:
    from ssmkit.rl.world_model import ConvEncoder

    config = RLConfig(
        env_id="ssmkit/PixelTMaze-v0",
        env_kwargs={"corridor_length": 1, "size": 8},
        world_model="s5",
        world_model_kwargs={"mixer_kwargs": {"d_state": 8}, "stoch": 4, "classes": 4},
        num_envs=2,
        total_env_steps=40,
        prefill_env_steps=10,
        updates_per_lockstep=1.0,
        batch_size=2,
        seq_len=6,
        d_hidden=16,
        horizon=3,
        eval_every=40,
        eval_episodes=1,
        checkpoint_every=10_000,
        out_dir=str(tmp_path),
        tensorboard=False,
    )
    trainer = Trainer(config)
    assert isinstance(trainer.agent.world_model.encoder, ConvEncoder)
    before = {k: v.clone() for k, v in trainer.agent.world_model.state_dict().items()}
    history = trainer.run(progress=False)
    assert trainer.updates > 0 and len(history) == 1
    assert trainer.replay.data["obs"].shape[2:] == (3, 8, 8)
    changed = [k for k, v in trainer.agent.world_model.state_dict().items() if "encoder" in k]
    assert any(
        not torch.equal(trainer.agent.world_model.state_dict()[k], before[k]) for k in changed
    )
    resumed = Trainer.load(tmp_path / "checkpoint.pt")
    assert resumed.replay.data["obs"].shape == trainer.replay.data["obs"].shape
