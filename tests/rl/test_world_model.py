"""World model: resets equal separate episodes, recurrent acting equals observe, imagine, loss, resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ssmkit.rl.world_model as world_model_module
from ssmkit.rl.world_model import SSMWorldModel

CORES = ["gru", "mlp", "s5", "s5_glu", "mamba", "mamba2"]


@pytest.fixture
def deterministic_latents(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latents at their mode, so two computations of the same sequence can be compared exactly."""

    def mode(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype) + probs - probs.detach()

    monkeypatch.setattr(world_model_module, "sample_straight_through", mode)


def _model(core: str) -> SSMWorldModel:
    kwargs: dict = {"mixer_kwargs": {"d_state": 8}} if core in ("s5", "mamba") else {}
    if core == "s5_glu":
        core, kwargs = "s5", {"mixer_kwargs": {"d_state": 8}, "ssm_glu": True}
    if core == "mamba2":
        kwargs = {"mixer_kwargs": {"d_state": 8, "headdim": 8, "chunk_size": 4}}
    return SSMWorldModel(
        obs_dim=5, num_actions=3, sequence_model=core, d_hidden=16, stoch=4, classes=4, **kwargs
    )


def _batch(batch: int = 2, steps: int = 9) -> dict[str, torch.Tensor]:
    is_first = torch.zeros(batch, steps, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, 4] = True
    return {
        "obs": torch.randn(batch, steps, 5),
        "action": F.one_hot(torch.randint(3, (batch, steps)), 3).float(),
        "reward": torch.randn(batch, steps),
        "is_first": is_first,
        "is_terminal": torch.zeros(batch, steps, dtype=torch.bool),
    }


@pytest.mark.parametrize("core", CORES)
def test_observe_with_resets_equals_separate_episodes(
    core: str, deterministic_latents: None
) -> None:
    model = _model(core).eval()
    batch = _batch()
    posts, priors, _ = model.observe(batch["obs"], batch["action"], batch["is_first"])
    for start, stop in ((0, 4), (4, 9)):
        part = {k: v[:1, start:stop] for k, v in batch.items()}
        alone, alone_priors, _ = model.observe(part["obs"], part["action"], part["is_first"])
        torch.testing.assert_close(
            posts["deter"][:1, start:stop], alone["deter"], atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(
            priors["probs"][:1, start:stop], alone_priors["probs"], atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("core", CORES)
def test_recurrent_acting_path_equals_parallel_observe(
    core: str, deterministic_latents: None
) -> None:
    model = _model(core).eval()
    batch = _batch()
    posts, _, _ = model.observe(batch["obs"], batch["action"], batch["is_first"])
    state = model.init_state(2)
    for t in range(batch["obs"].shape[1]):
        state = model.observe_step(batch["obs"][:, t], batch["is_first"][:, t], state)
        torch.testing.assert_close(state.deter, posts["deter"][:, t], atol=1e-5, rtol=1e-4)
        state.action = batch["action"][:, t]


@pytest.mark.parametrize("core", CORES)
def test_observe_continues_from_a_state(core: str, deterministic_latents: None) -> None:
    model = _model(core).eval()
    batch = _batch()
    whole, _, _ = model.observe(batch["obs"], batch["action"], batch["is_first"])
    _, _, state = model.observe(
        batch["obs"][:, :6], batch["action"][:, :6], batch["is_first"][:, :6]
    )
    rest, _, _ = model.observe(
        batch["obs"][:, 6:], batch["action"][:, 6:], batch["is_first"][:, 6:], state
    )
    torch.testing.assert_close(rest["deter"], whole["deter"][:, 6:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("core", CORES)
def test_imagine_shapes_and_loss_gradients(core: str) -> None:
    model = _model(core)
    batch = _batch()
    loss, metrics, posts = model.loss(batch)
    loss.backward()
    assert set(metrics) == {"wm/recon", "wm/reward", "wm/continue", "wm/kl"}
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    _, _, state = model.observe(batch["obs"], batch["action"], batch["is_first"])
    traj = model.imagine(
        state,
        lambda feat: F.one_hot(torch.zeros(feat.shape[0], dtype=torch.long), 3).float(),
        horizon=6,
    )
    assert traj["feat"].shape == (2, 7, model.feature_dim)
    assert traj["action"].shape == (2, 7, 3)


def test_s5_defaults_use_short_step_sizes_and_can_be_overridden() -> None:
    from ssmkit.core.s5 import S5

    def steps(model: SSMWorldModel) -> torch.Tensor:
        return torch.cat([m.log_step.exp() for m in model.modules() if isinstance(m, S5)])

    default = SSMWorldModel(4, 2, sequence_model="s5", d_hidden=16)
    assert steps(default).min() >= 0.1 - 1e-6 and steps(default).max() <= 1.0 + 1e-6
    assert all(m.d_state == 32 for m in default.modules() if isinstance(m, S5))
    paper = SSMWorldModel(
        4, 2, sequence_model="s5", d_hidden=16, mixer_kwargs={"dt_min": 0.001, "dt_max": 0.1}
    )
    assert steps(paper).max() <= 0.1 + 1e-6


def test_bad_inputs_raise() -> None:
    model = _model("gru")
    batch = _batch()
    with pytest.raises(ValueError, match="obs must be"):
        model.observe(batch["obs"][..., :4], batch["action"], batch["is_first"])
    with pytest.raises(ValueError, match="is_first must be bool"):
        model.observe(batch["obs"], batch["action"], batch["is_first"].float())
    with pytest.raises(ValueError, match="sequence_model"):
        SSMWorldModel(5, 3, sequence_model="lstm")


def test_world_model_loss_decreases_on_a_memory_task() -> None:
    pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")
    import gymnasium as gym

    from ssmkit.rl.replay import SequenceReplay, VectorCollector
    from ssmkit.rl.wrappers import make_env

    torch.manual_seed(0)  # random actions and init: independent of the tests that ran before
    envs = gym.vector.SyncVectorEnv([lambda: make_env("ssmkit/TMaze-v0", corridor_length=1)] * 4)
    replay = SequenceReplay(400, 4, 2, 4)
    collector = VectorCollector(envs, replay, seed=0)
    for _ in range(200):
        collector.step(lambda obs, first: torch.randint(0, 2, (obs.shape[0],)))
    model = SSMWorldModel(4, 2, sequence_model="gru", d_hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(300):
        loss, metrics, _ = model.loss(replay.sample(16, 16, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(metrics)
    first = sum(h["wm/reward"] + h["wm/recon"] for h in history[:20]) / 20
    last = sum(h["wm/reward"] + h["wm/recon"] for h in history[-20:]) / 20
    assert last < 0.4 * first, (first, last)


def test_image_observations_use_a_cnn_encoder_and_decoder() -> None:
    model = SSMWorldModel(
        obs_dim=(3, 64, 64), num_actions=2, sequence_model="gru", d_hidden=16, stoch=4, classes=4
    )
    assert isinstance(model.encoder, world_model_module.ConvEncoder)
    is_first = torch.zeros(2, 3, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {
        "obs": torch.rand(2, 3, 3, 64, 64),
        "action": F.one_hot(torch.randint(2, (2, 3)), 2).float(),
        "reward": torch.randn(2, 3),
        "is_first": is_first,
        "is_terminal": torch.zeros(2, 3, dtype=torch.bool),
    }
    out = model(batch["obs"], batch["action"], batch["is_first"])
    assert out["obs"].shape == (2, 3, 3, 64, 64)
    loss, _, _ = model.loss(batch)
    loss.backward()
    assert model.encoder.convs[0].weight.grad.abs().sum() > 0
    assert model.decoder.deconvs[-1].weight.grad.abs().sum() > 0
    state = model.observe_step(batch["obs"][:, 0], is_first[:, 0], model.init_state(2))
    assert state.deter.shape == (2, 16)
    with pytest.raises(ValueError, match="obs must be"):
        model.observe(batch["obs"][..., :32], batch["action"], batch["is_first"])
    with pytest.raises(ValueError, match="divisible"):
        SSMWorldModel(obs_dim=(3, 60, 60), num_actions=2, sequence_model="gru")
