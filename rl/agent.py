"""DreamerAgent: actor-critic trained in the imagination of an ``SSMWorldModel``.

DreamerV3 (Hafner et al., "Mastering Diverse Domains through World Models", arXiv 2301.04104):
lambda-returns over imagined rollouts, returns normalised by an EMA of their 5-95 percentile
range, a critic regressing symlog returns with a slowly updated target copy, and a REINFORCE
actor with an entropy bonus (discrete actions). The agent acts with the world model's recurrent
state, so the same code runs an S5, Mamba, Mamba-2, GRU or memoryless world model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.rl.distributions import symexp, symlog
from ssmkit.rl.world_model import SSMWorldModel, WorldModelState, mlp


def lambda_returns(
    reward: torch.Tensor, value: torch.Tensor, discount: torch.Tensor, lam: float
) -> torch.Tensor:
    """R_t = r_{t+1} + gamma_{t+1} * ((1 - lam) * v_{t+1} + lam * R_{t+1}), R_H = v_H.

    Args:
        reward: (B, H) reward arriving with imagined state t + 1.
        value: (B, H + 1) critic values of imagined states 0..H.
        discount: (B, H) gamma times the continue probability of state t + 1.
    Returns:
        (B, H) returns for states 0..H-1.
    """
    returns = [value[:, -1]]
    for t in reversed(range(reward.shape[1])):
        returns.append(
            reward[:, t] + discount[:, t] * ((1 - lam) * value[:, t + 1] + lam * returns[-1])
        )
    return torch.stack(returns[1:][::-1], 1)


class DreamerAgent(nn.Module):
    """World model + actor + critic, with their optimisers and one ``train_step``.

    Args:
        world_model: any :class:`SSMWorldModel`.
        d_hidden: actor / critic MLP width.
        horizon: imagination length.
        gamma, lam: discount and lambda of the returns.
        entropy: actor entropy bonus.
        model_lr, actor_lr, critic_lr: Adam learning rates.
        imagine_chunks: observed windows are split into this many chunks; imagination starts
            from the state at the end of each chunk (the sequence model's ``forward`` returns only
            final states, continued across chunks with ``state=``).
    """

    def __init__(
        self,
        world_model: SSMWorldModel,
        d_hidden: int = 128,
        horizon: int = 15,
        gamma: float = 0.985,
        lam: float = 0.95,
        entropy: float = 3e-3,
        model_lr: float = 1e-3,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        slow_critic_decay: float = 0.98,
        imagine_chunks: int = 4,
        grad_clip: float = 100.0,
    ) -> None:
        super().__init__()
        self.world_model = world_model
        self.num_actions = world_model.num_actions
        self.actor = mlp(world_model.feature_dim, d_hidden, self.num_actions)
        self.critic = mlp(world_model.feature_dim, d_hidden, 1)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.horizon, self.gamma, self.lam, self.entropy = horizon, gamma, lam, entropy
        self.slow_critic_decay, self.imagine_chunks, self.grad_clip = (
            slow_critic_decay,
            imagine_chunks,
            grad_clip,
        )
        self.register_buffer("return_scale", torch.ones(()))
        self.model_opt = torch.optim.Adam(world_model.parameters(), lr=model_lr, eps=1e-8)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, eps=1e-5)

    def policy(self, feat: torch.Tensor, greedy: bool = False) -> torch.Tensor:
        """One-hot action (B, A) from features; straight-through so rollouts stay differentiable."""
        probs = 0.99 * self.actor(feat).softmax(-1) + 0.01 / self.num_actions
        index = probs.argmax(-1) if greedy else torch.multinomial(probs.detach(), 1).squeeze(-1)
        return F.one_hot(index, self.num_actions).to(probs.dtype)

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        is_first: torch.Tensor,
        state: WorldModelState | None,
        greedy: bool = False,
    ) -> tuple[torch.Tensor, WorldModelState]:
        """Actions (E,) for observations (E, O), carrying the world model's recurrent state."""
        if state is None:
            state = self.world_model.init_state(obs.shape[0], obs.device)
        state = self.world_model.observe_step(obs, is_first, state)
        action = self.policy(state.features(), greedy)
        state.action = action
        return action.argmax(-1), state

    def _imagination_starts(self, batch: dict[str, torch.Tensor]) -> WorldModelState:
        """World-model states at the end of each of ``imagine_chunks`` chunks of the batch."""
        wm = self.world_model
        chunks = [
            c for c in torch.arange(batch["obs"].shape[1]).chunk(self.imagine_chunks) if len(c)
        ]
        state, starts = None, []
        for index in chunks:
            part = {k: batch[k][:, index] for k in ("obs", "action", "is_first")}
            _, _, state = wm.observe(part["obs"], part["action"], part["is_first"], state)
            starts.append(state)
        return _cat_states(starts)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One world-model update and one actor-critic update in imagination."""
        wm = self.world_model
        loss, metrics, _ = wm.loss(batch)
        self.model_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(wm.parameters(), self.grad_clip)
        self.model_opt.step()

        # The actor learns by REINFORCE on imagined actions, so imagination needs no graph.
        with torch.no_grad():
            traj = wm.imagine(self._imagination_starts(batch), self.policy, self.horizon)
            feat = traj["feat"]
            reward = symexp(wm.reward_head(feat[:, 1:]).squeeze(-1))
            discount = self.gamma * torch.sigmoid(wm.continue_head(feat[:, 1:]).squeeze(-1))
            value = symexp(self.slow_critic(feat).squeeze(-1))
        returns = lambda_returns(reward, value, discount, self.lam).detach()
        weight = torch.cumprod(
            torch.cat([torch.ones_like(discount[:, :1]), discount[:, :-1]], 1), 1
        ).detach()

        # Return normalisation: EMA of the 5-95 percentile range, at least 1.
        span = torch.quantile(returns, 0.95) - torch.quantile(returns, 0.05)
        self.return_scale.mul_(0.99).add_(0.01 * span.clamp_min(1.0))
        logits = self.actor(feat[:, :-1])
        log_probs = (0.99 * logits.softmax(-1) + 0.01 / self.num_actions).log()
        taken = (log_probs * traj["action"][:, :-1].detach()).sum(-1)
        advantage = (returns - value[:, :-1]) / self.return_scale
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        actor_loss = -(weight * (taken * advantage.detach() + self.entropy * entropy)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        nn.utils.clip_grad_norm_(self.actor.parameters(), self.grad_clip)
        self.actor_opt.step()

        critic_loss = (
            weight * (self.critic(feat[:, :-1]).squeeze(-1) - symlog(returns)).pow(2)
        ).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        nn.utils.clip_grad_norm_(self.critic.parameters(), self.grad_clip)
        self.critic_opt.step()
        with torch.no_grad():
            for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
                slow.lerp_(fast, 1 - self.slow_critic_decay)
        metrics.update(
            {
                "actor/loss": actor_loss.item(),
                "actor/entropy": entropy.mean().item(),
                "critic/loss": critic_loss.item(),
                "imagine/return": returns.mean().item(),
            }
        )
        return metrics

    def training_state(self) -> dict[str, Any]:
        """Everything needed to resume training exactly (weights, optimisers, scale)."""
        return {
            "agent": self.state_dict(),
            "model_opt": self.model_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["agent"])
        self.model_opt.load_state_dict(state["model_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])


def _cat_states(states: list[Any]) -> Any:
    """Concatenate a list of (nested) states along the batch dimension."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(states, 0)
    if isinstance(first, (list, tuple)):
        return type(first)(_cat_states(list(parts)) for parts in zip(*states))
    if isinstance(first, dict):
        return {k: _cat_states([s[k] for s in states]) for k in first}
    if hasattr(first, "__dataclass_fields__"):
        return type(first)(
            **{f: _cat_states([getattr(s, f) for s in states]) for f in first.__dataclass_fields__}
        )
    return first
