"""Memory tasks, wrappers, replay bookkeeping around gymnasium's NEXT_STEP autoreset."""

from __future__ import annotations

import pytest

gym = pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

from ssmkit.rl.envs import (  # noqa: E402
    MASKED_CARTPOLE_ID,
    PIXEL_TMAZE_ID,
    TMAZE_ID,
    MaskedCartPole,
    PixelTMaze,
    TMaze,
)
from ssmkit.rl.replay import SequenceReplay, VectorCollector  # noqa: E402
from ssmkit.rl.wrappers import (  # noqa: E402
    ActionRepeat,
    ImageObservation,
    OneHotObservation,
    make_env,
)


@pytest.mark.parametrize("length", [1, 4])
def test_tmaze_passes_env_checker_and_rewards_the_cued_arm(length: int) -> None:
    env = TMaze(corridor_length=length)
    check_env(env, skip_render_check=True)
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        goal = int(np.argmax(obs[:2]))
        assert obs[:2].sum() == 1.0
        for _ in range(length):
            obs, reward, terminated, _, _ = env.step(np.int64(1 - goal))
            assert reward == 0.0 and not terminated and obs[:2].sum() == 0.0
        assert obs[3] == 1.0
        _, reward, terminated, _, _ = env.step(np.int64(goal))
        assert terminated and reward == 1.0


def test_tmaze_bad_arguments() -> None:
    with pytest.raises(ValueError, match="corridor_length"):
        TMaze(corridor_length=0)
    env = TMaze()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.int64(5))


def test_make_env_one_hots_popgym_and_registers_tmaze() -> None:
    env = make_env(TMAZE_ID, corridor_length=3)
    assert env.observation_space.shape == (4,)
    pytest.importorskip("popgym", reason="popgym is not installed")
    env = make_env("popgym-RepeatPreviousEasy-v0")
    assert isinstance(env, OneHotObservation)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and obs.sum() == 1.0
    check_env(env.unwrapped, skip_render_check=True)
    with pytest.raises(ValueError, match="Unknown gymnasium id"):
        make_env("NoSuchEnv-v0")


def test_masked_cartpole_hides_velocities_and_follows_cartpole_dynamics() -> None:
    env = MaskedCartPole()
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    full = env._env.state
    assert obs.shape == (2,) and np.allclose(obs, [full[0], full[2]])
    for _ in range(3):
        obs, reward, terminated, _, _ = env.step(np.int64(1))
        assert reward == 1.0 and not terminated
    state = env._env.state
    assert np.allclose(obs, [state[0], state[2]]) and state[1] > 0  # pushed right: moving right
    again, _ = MaskedCartPole().reset(seed=3)
    np.testing.assert_array_equal(again, env.reset(seed=3)[0])
    with pytest.raises(ValueError, match="action"):
        env.step(np.int64(2))
    made = make_env(MASKED_CARTPOLE_ID)
    assert made.observation_space.shape == (2,) and made.spec.max_episode_steps == 500


def test_action_repeat_sums_rewards_and_stops_at_the_end() -> None:
    env = ActionRepeat(TMaze(corridor_length=2), repeat=5)
    obs, _ = env.reset(seed=0)
    goal = int(np.argmax(obs[:2]))
    _, reward, terminated, _, _ = env.step(np.int64(goal))
    assert terminated and reward == 1.0
    with pytest.raises(ValueError):
        ActionRepeat(TMaze(), repeat=0)


def test_collector_marks_is_first_after_autoreset_and_drops_the_reset_reward() -> None:
    length, num_envs = 2, 3
    envs = gym.vector.SyncVectorEnv([lambda: TMaze(corridor_length=length)] * num_envs)
    replay = SequenceReplay(capacity=64, obs_dim=4, action_dim=2, num_envs=num_envs)
    collector = VectorCollector(envs, replay, seed=0)
    # Choose the cued arm whenever a cue is visible; remember it per env.
    memory = torch.zeros(num_envs, dtype=torch.long)

    def policy(obs: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        memory[is_first] = obs[is_first, :2].argmax(-1)
        return memory.clone()

    for _ in range(3 * (length + 2)):
        collector.step(policy)
    data = {k: v[: replay.size] for k, v in replay.data.items()}
    period = length + 2  # length corridor steps, the junction, and the autoreset step
    for t in range(replay.size):
        expect_first = t % period == 0
        assert bool(data["is_first"][t].all()) == expect_first, t
        expect_terminal = t % period == length + 1
        assert bool(data["is_terminal"][t].all()) == expect_terminal, t
        assert float(data["reward"][t].sum()) == (num_envs * 1.0 if expect_terminal else 0.0), t
    assert collector.finished_returns[:num_envs] == [1.0] * num_envs


def test_replay_sampling_windows_and_resume() -> None:
    replay = SequenceReplay(capacity=10, obs_dim=1, action_dim=1, num_envs=2)
    for t in range(13):  # wraps around: keeps steps 3..12
        replay.add(
            obs=torch.full((2, 1), float(t)),
            action=torch.zeros(2, 1),
            reward=torch.zeros(2),
            is_first=torch.tensor([t % 4 == 0] * 2),
            is_terminal=torch.zeros(2, dtype=torch.bool),
        )
    assert len(replay) == 20
    batch = replay.sample(16, 5, generator=torch.Generator().manual_seed(0))
    obs = batch["obs"][..., 0]
    assert obs.shape == (16, 5)
    assert (obs.diff(dim=1) == 1).all() and obs.min() >= 3 and obs.max() <= 12
    assert batch["is_first"][:, 0].all()
    restored = SequenceReplay(capacity=10, obs_dim=1, action_dim=1, num_envs=2)
    restored.load_state_dict(replay.state_dict())
    again = restored.sample(16, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["obs"], batch["obs"])
    with pytest.raises(ValueError, match="only 10 stored"):
        replay.sample(1, 11)
    with pytest.raises(ValueError, match="shape"):
        replay.add(
            obs=torch.zeros(3, 1),
            action=torch.zeros(2, 1),
            reward=torch.zeros(2),
            is_first=torch.zeros(2, dtype=torch.bool),
            is_terminal=torch.zeros(2, dtype=torch.bool),
        )


def test_pixel_tmaze_images_and_the_float_chw_wrapper() -> None:
    env = PixelTMaze(corridor_length=2, size=16)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    goal = env._goal
    assert obs.shape == (16, 16, 3) and obs.dtype == np.uint8
    # cue quadrant lit in red, corridor quadrant in green, nothing else
    assert obs[:8, goal * 8 : goal * 8 + 8, 0].min() == 255
    assert obs[:8, (1 - goal) * 8 : (1 - goal) * 8 + 8].max() == 0
    assert obs[8:, :8, 1].min() == 255 and obs[8:, 8:].max() == 0
    wrapped = make_env(PIXEL_TMAZE_ID, corridor_length=2, size=16)
    image, _ = wrapped.reset(seed=3)
    assert isinstance(wrapped, ImageObservation)
    assert image.shape == (3, 16, 16) and image.dtype == np.float32
    np.testing.assert_array_equal(image, np.moveaxis(obs, -1, 0) / 255.0)
    with pytest.raises(ValueError, match="size"):
        PixelTMaze(size=7)
    with pytest.raises(TypeError, match="uint8"):
        ImageObservation(TMaze())


def test_replay_keeps_image_observation_shapes() -> None:
    envs = gym.vector.SyncVectorEnv(
        [lambda: make_env(PIXEL_TMAZE_ID, corridor_length=1, size=8)] * 2
    )
    replay = SequenceReplay(16, (3, 8, 8), 2, num_envs=2)
    collector = VectorCollector(envs, replay, seed=0)
    first_obs = collector.obs.clone()
    for _ in range(6):
        collector.step(lambda obs, first: torch.zeros(obs.shape[0], dtype=torch.long))
    assert replay.data["obs"].shape == (16, 2, 3, 8, 8)
    torch.testing.assert_close(replay.data["obs"][0], first_obs)
    batch = replay.sample(3, 4, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (3, 4, 3, 8, 8)
    with pytest.raises(ValueError, match="obs_dim"):
        SequenceReplay(16, (3, 0, 8), 2)
