"""SSM world models (R2I-style) usable by any agent: ``observe``, ``imagine``, ``loss``.

R2I (Samsami et al., "Mastering Memory Tasks with World Models", ICLR 2024, arXiv 2403.04253)
replaces DreamerV3's GRU with an SSM and makes the posterior non-recurrent, q(z_t | o_t), so that
training runs the sequence model as one parallel scan over ``(x[B, T], is_first[B, T])``:

    z_t ~ q(z_t | o_t)                          posterior, encoder only
    h_t = f(h_{t-1}, z_{t-1}, a_{t-1})          sequence model (S5 / Mamba / Mamba-2 / GRU), reset at is_first
    z_t ~ p(z_t | h_t)                          prior (dynamics)
    o_t, r_t, c_t ~ p(. | h_t, z_t)             decoder, reward and continue heads

The loss is DreamerV3's: symlog reconstruction and reward regression, continue BCE, and the KL
balance ``dyn * max(free, KL(sg(q) || p)) + rep * max(free, KL(q || sg(p)))``. Imagination is
recurrent with the sequence model's ``step``. Drama (Wang et al., ICLR 2025) is the Mamba-2 form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.rl.distributions import (
    categorical_kl,
    categorical_probs,
    sample_straight_through,
    symlog,
)
from ssmkit.rl.sequence_models import GRUCore, SSMCore, reset_state

SEQUENCE_MODELS = ("s5", "mamba", "mamba2", "gru", "mlp")

# Mixer settings used unless ``mixer_kwargs`` overrides them. S5's own default step range,
# dt in [0.001, 0.1], keeps B̄ ~ dt·B tiny and the state nearly constant over the few steps that
# matter in an RL world model: on TMaze the S5 world model then needs ~900 updates to carry a
# cue one step and none of 900 for three steps, against ~450 / ~750 with dt in [0.1, 1]
# (``ssmkit bench rl --part probe``; benchmarks/results/rl.md).
MIXER_DEFAULTS: dict[str, dict[str, Any]] = {
    "s5": {"d_state": 32, "dt_min": 0.1, "dt_max": 1.0},
    "mamba": {"d_state": 16},
}


def mlp(d_in: int, d_hidden: int, d_out: int, layers: int = 2) -> nn.Sequential:
    """LayerNorm-SiLU MLP, DreamerV3's building block."""
    modules: list[nn.Module] = []
    for i in range(layers):
        modules += [
            nn.Linear(d_in if i == 0 else d_hidden, d_hidden),
            nn.LayerNorm(d_hidden),
            nn.SiLU(),
        ]
    modules.append(nn.Linear(d_hidden if layers else d_in, d_out))
    return nn.Sequential(*modules)


class MemorylessCore(nn.Module):
    """No memory at all: h_t depends only on (z_{t-1}, a_{t-1}). The memoryless baseline."""

    def __init__(self, d_input: int, d_hidden: int) -> None:
        super().__init__()
        self.net = mlp(d_input, d_hidden, d_hidden, layers=1)
        self.d_hidden = d_hidden

    def init_state(self, batch_size: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(batch_size, 0, device=device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x_t), state

    def forward(
        self, x: torch.Tensor, resets: torch.Tensor, state: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), self.init_state(x.shape[0], x.device)


def _conv_stages(obs_shape: tuple[int, ...]) -> int:
    """Number of stride-2 stages that bring an image (C, H, W) down to about 4x4."""
    _, height, width = obs_shape
    stages = 0
    while min(height, width) // 2 ** (stages + 1) >= 4:
        stages += 1
    if stages == 0 or height % 2**stages or width % 2**stages:
        raise ValueError(
            f"image observations (C, H, W) need H and W >= 8 and divisible by 2**stages "
            f"(e.g. (3, 64, 64)), got {obs_shape}; resize the frames with a wrapper first."
        )
    return stages


class ConvEncoder(nn.Module):
    """DreamerV3 / Drama image encoder: stride-2 4x4 convs (GroupNorm-SiLU) doubling the depth
    until the map is 4x4, then flatten and project. (N, C, H, W) -> (N, d_out).

    Args:
        obs_shape: (C, H, W), H and W divisible by 2**stages (64x64 -> 4 stages).
        d_out: output width.
        depth: channels of the first stage (doubled at every stage).
    """

    def __init__(self, obs_shape: tuple[int, ...], d_out: int, depth: int = 16) -> None:
        super().__init__()
        stages = _conv_stages(obs_shape)
        layers: list[nn.Module] = []
        channels = obs_shape[0]
        for i in range(stages):
            out = depth * 2**i
            layers += [nn.Conv2d(channels, out, 4, 2, 1), nn.GroupNorm(1, out), nn.SiLU()]
            channels = out
        self.convs = nn.Sequential(*layers)
        flat = channels * (obs_shape[1] // 2**stages) * (obs_shape[2] // 2**stages)
        self.out = nn.Linear(flat, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(x).flatten(1))


class ConvDecoder(nn.Module):
    """Mirror of ``ConvEncoder``: project to a 4x4 map, stride-2 transposed convs back to
    (C, H, W). (N, d_in) -> (N, C, H, W)."""

    def __init__(self, d_in: int, obs_shape: tuple[int, ...], depth: int = 16) -> None:
        super().__init__()
        stages = _conv_stages(obs_shape)
        self.start = (
            depth * 2 ** (stages - 1),
            obs_shape[1] // 2**stages,
            obs_shape[2] // 2**stages,
        )
        self.inp = nn.Linear(d_in, self.start[0] * self.start[1] * self.start[2])
        layers: list[nn.Module] = []
        channels = self.start[0]
        for i in reversed(range(stages)):
            last = i == 0
            out = obs_shape[0] if last else depth * 2 ** (i - 1)
            layers.append(nn.ConvTranspose2d(channels, out, 4, 2, 1))
            if not last:
                layers += [nn.GroupNorm(1, out), nn.SiLU()]
            channels = out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.inp(x).unflatten(-1, self.start))


@dataclass
class WorldModelState:
    """Recurrent state after a step: sequence-model state, last latent, last action, last deter.

    Shapes: ``stoch`` (B, S*K), ``action`` (B, A), ``deter`` (B, H); ``core`` is the sequence
    model's own state object.
    """

    core: Any
    stoch: torch.Tensor
    action: torch.Tensor
    deter: torch.Tensor

    def features(self) -> torch.Tensor:
        """(B, H + S*K): what actor and critic see."""
        return torch.cat([self.deter, self.stoch], -1)


class SSMWorldModel(nn.Module):
    """World model with a pluggable sequence model and categorical latents.

    Args:
        obs_dim: observation size O (vector observations, MLP encoder/decoder) or an image shape
            (C, H, W) (CNN encoder/decoder, DreamerV3-style; e.g. (3, 64, 64)).
        num_actions: size A of the (one-hot) action.
        sequence_model: ``"s5"``, ``"mamba"``, ``"mamba2"``, ``"gru"`` or ``"mlp"`` (memoryless).
        d_hidden: width H of the sequence model and MLPs.
        stoch: number S of categorical latents.
        classes: classes K per latent.
        n_layers: SSM layers (ignored by gru/mlp).
        mixer_kwargs: forwarded to the SSM mixers (e.g. ``{"d_state": 32}``), on top of
            ``MIXER_DEFAULTS[sequence_model]``.
        ssm_glu: follow each SSM layer with R2I's GELU + GLU MLP (ignored by gru/mlp).
        free_bits, dyn_scale, rep_scale, unimix: DreamerV3 loss and latent settings.
    """

    def __init__(
        self,
        obs_dim: int | tuple[int, ...],
        num_actions: int,
        sequence_model: str = "s5",
        d_hidden: int = 128,
        stoch: int = 8,
        classes: int = 8,
        n_layers: int = 2,
        mixer_kwargs: dict[str, Any] | None = None,
        ssm_glu: bool = False,
        free_bits: float = 1.0,
        dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
        unimix: float = 0.01,
    ) -> None:
        super().__init__()
        if sequence_model not in SEQUENCE_MODELS:
            raise ValueError(
                f"sequence_model must be one of {SEQUENCE_MODELS}, got {sequence_model!r}."
            )
        self.obs_dim, self.num_actions = obs_dim, num_actions
        self.obs_shape = (int(obs_dim),) if isinstance(obs_dim, int) else tuple(obs_dim)
        if len(self.obs_shape) not in (1, 3):
            raise ValueError(
                f"obs_dim must be an int O or an image shape (C, H, W), got {obs_dim!r}."
            )
        self.stoch, self.classes, self.d_hidden = stoch, classes, d_hidden
        self.free_bits, self.dyn_scale, self.rep_scale, self.unimix = (
            free_bits,
            dyn_scale,
            rep_scale,
            unimix,
        )
        d_latent = stoch * classes
        if len(self.obs_shape) == 3:
            self.encoder: nn.Module = ConvEncoder(self.obs_shape, d_hidden)
        else:
            self.encoder = mlp(self.obs_shape[0], d_hidden, d_hidden)
        self.posterior = nn.Linear(d_hidden, d_latent)
        d_input = d_latent + num_actions
        if sequence_model == "gru":
            self.core: nn.Module = GRUCore(d_input, d_hidden)
        elif sequence_model == "mlp":
            self.core = MemorylessCore(d_input, d_hidden)
        else:
            self.core = SSMCore(
                d_input,
                d_hidden,
                mixer=sequence_model,
                n_layers=n_layers,
                mixer_kwargs={**MIXER_DEFAULTS.get(sequence_model, {}), **(mixer_kwargs or {})},
                glu=ssm_glu,
            )
        self.prior = mlp(d_hidden, d_hidden, d_latent, layers=1)
        d_feat = d_hidden + d_latent
        if len(self.obs_shape) == 3:
            self.decoder: nn.Module = ConvDecoder(d_feat, self.obs_shape)
        else:
            self.decoder = mlp(d_feat, d_hidden, self.obs_shape[0])
        self.reward_head = mlp(d_feat, d_hidden, 1)
        self.continue_head = mlp(d_feat, d_hidden, 1)
        self.feature_dim = d_feat

    def _latent(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        probs = categorical_probs(logits.unflatten(-1, (self.stoch, self.classes)), self.unimix)
        return probs, sample_straight_through(probs, generator).flatten(-2)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> WorldModelState:
        return WorldModelState(
            core=self.core.init_state(batch_size, device),
            stoch=torch.zeros(batch_size, self.stoch * self.classes, device=device),
            action=torch.zeros(batch_size, self.num_actions, device=device),
            deter=torch.zeros(batch_size, self.d_hidden, device=device),
        )

    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(..., *obs_shape) -> (..., H), flattening the leading dims for the CNN."""
        lead = obs.shape[: obs.dim() - len(self.obs_shape)]
        return self.encoder(obs.reshape(-1, *self.obs_shape)).reshape(*lead, -1)

    def decode(self, feat: torch.Tensor) -> torch.Tensor:
        """Reconstructed symlog observation (..., *obs_shape) from features (..., F)."""
        out = self.decoder(feat.reshape(-1, feat.shape[-1]))
        return out.reshape(*feat.shape[:-1], *self.obs_shape)

    def _check(self, obs: torch.Tensor, actions: torch.Tensor, is_first: torch.Tensor) -> None:
        if obs.dim() != 2 + len(self.obs_shape) or tuple(obs.shape[2:]) != self.obs_shape:
            raise ValueError(
                f"obs must be (B, T, {', '.join(map(str, self.obs_shape))}), got {tuple(obs.shape)}."
            )
        if actions.shape != (*obs.shape[:2], self.num_actions):
            raise ValueError(
                f"actions must be one-hot (B, T, {self.num_actions}), got {tuple(actions.shape)}."
            )
        if is_first.shape != obs.shape[:2] or is_first.dtype != torch.bool:
            raise ValueError(
                f"is_first must be bool (B, T) = {tuple(obs.shape[:2])}, got {is_first.dtype} {tuple(is_first.shape)}."
            )

    def observe(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        is_first: torch.Tensor,
        state: WorldModelState | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], WorldModelState]:
        """Posterior and prior for a whole sequence in one parallel pass.

        Args:
            obs: (B, T, O) observations, or (B, T, C, H, W) images.
            actions: (B, T, A) one-hot actions taken *from* each observation.
            is_first: (B, T) bool episode starts (state reset before that step).
            state: state after the previous chunk, to continue a sequence.

        Returns:
            posts: ``probs`` (B, T, S, K), ``stoch`` (B, T, S*K), ``deter`` (B, T, H), ``feat``.
            priors: ``probs`` (B, T, S, K).
            state: the state after the last step.
        """
        self._check(obs, actions, is_first)
        batch = obs.shape[0]
        if state is None:
            state = self.init_state(batch, obs.device)
        post_probs, stoch = self._latent(self.posterior(self._encode(obs)))
        prev_stoch = torch.cat([state.stoch[:, None], stoch[:, :-1]], 1)
        prev_action = torch.cat([state.action[:, None], actions[:, :-1]], 1)
        keep = (~is_first).unsqueeze(-1).to(stoch.dtype)
        deter, core_state = self.core(
            torch.cat([prev_stoch * keep, prev_action * keep], -1), is_first, state.core
        )
        prior_probs, _ = self._latent(self.prior(deter))
        posts = {
            "probs": post_probs,
            "stoch": stoch,
            "deter": deter,
            "feat": torch.cat([deter, stoch], -1),
        }
        new_state = WorldModelState(core_state, stoch[:, -1], actions[:, -1], deter[:, -1])
        return posts, {"probs": prior_probs}, new_state

    def observe_step(
        self, obs_t: torch.Tensor, is_first_t: torch.Tensor, state: WorldModelState
    ) -> WorldModelState:
        """Recurrent ``observe`` for acting: fold in ``obs_t`` (B, *obs_shape); ``state.action``
        is a_{t-1}."""
        core = reset_state(self.core, state.core, is_first_t)
        keep = (~is_first_t).unsqueeze(-1).to(obs_t.dtype)
        x = torch.cat([state.stoch * keep, state.action * keep], -1)
        deter, core = self.core.step(x, core)
        _, stoch = self._latent(self.posterior(self._encode(obs_t)))
        return WorldModelState(core, stoch, state.action, deter)

    def imagine(
        self,
        start: WorldModelState,
        policy: Callable[[torch.Tensor], torch.Tensor],
        horizon: int,
    ) -> dict[str, torch.Tensor]:
        """Roll the prior forward with ``policy(features (B, F)) -> one-hot action (B, A)``.

        Returns ``feat`` (B, horizon + 1, F) starting at ``start`` and ``action`` (B, horizon + 1, A),
        the action taken from each imagined state.
        """
        feats, actions = [start.features()], []
        core, stoch = start.core, start.stoch
        for _ in range(horizon):
            action = policy(feats[-1].detach())
            actions.append(action)
            deter, core = self.core.step(torch.cat([stoch, action], -1), core)
            _, stoch = self._latent(self.prior(deter))
            feats.append(torch.cat([deter, stoch], -1))
        actions.append(policy(feats[-1].detach()))
        return {"feat": torch.stack(feats, 1), "action": torch.stack(actions, 1)}

    def forward(
        self, obs: torch.Tensor, actions: torch.Tensor, is_first: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Everything the model predicts for a sequence (B, T, ...): posterior and prior
        ``probs``, ``deter``, reconstructed symlog ``obs``, symlog ``reward``, ``continue`` logits."""
        posts, priors, _ = self.observe(obs, actions, is_first)
        feat = posts["feat"]
        return {
            "post_probs": posts["probs"],
            "prior_probs": priors["probs"],
            "deter": posts["deter"],
            "obs": self.decode(feat),
            "reward": self.reward_head(feat).squeeze(-1),
            "continue": self.continue_head(feat).squeeze(-1),
        }

    def loss(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        """DreamerV3 world-model loss on a replay batch (``obs``, ``action``, ``reward``,
        ``is_first``, ``is_terminal``; each (B, T, ...)). Returns (loss, metrics, posts)."""
        posts, priors, _ = self.observe(batch["obs"], batch["action"], batch["is_first"])
        feat = posts["feat"]
        recon = (self.decode(feat) - symlog(batch["obs"])).pow(2).flatten(2).sum(-1).mean()
        reward = (self.reward_head(feat).squeeze(-1) - symlog(batch["reward"])).pow(2).mean()
        cont = F.binary_cross_entropy_with_logits(
            self.continue_head(feat).squeeze(-1), (~batch["is_terminal"]).float()
        )
        dyn = categorical_kl(posts["probs"].detach(), priors["probs"])
        rep = categorical_kl(posts["probs"], priors["probs"].detach())
        kl = (
            self.dyn_scale * dyn.clamp_min(self.free_bits).mean()
            + self.rep_scale * rep.clamp_min(self.free_bits).mean()
        )
        total = recon + reward + cont + kl
        metrics = {
            "wm/recon": recon.item(),
            "wm/reward": reward.item(),
            "wm/continue": cont.item(),
            "wm/kl": dyn.mean().item(),
        }
        return total, metrics, posts
