"""DreamerV3's small pieces: symlog, categorical latents with unimix, KL with free bits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: compresses large targets (rewards, returns, observations)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(x.abs())


def categorical_probs(logits: torch.Tensor, unimix: float = 0.01) -> torch.Tensor:
    """Softmax over the last dim mixed with ``unimix`` of the uniform distribution.

    Args:
        logits: (..., S, K) for S categorical variables of K classes.
    """
    probs = logits.float().softmax(-1)
    return (1.0 - unimix) * probs + unimix / logits.shape[-1]


def sample_straight_through(
    probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One-hot samples (..., S, K) whose gradient is that of ``probs`` (straight-through)."""
    flat = probs.reshape(-1, probs.shape[-1])
    index = torch.multinomial(flat.detach(), 1, generator=generator).squeeze(-1)
    one_hot = F.one_hot(index, probs.shape[-1]).to(probs.dtype).reshape(probs.shape)
    return one_hot + probs - probs.detach()


def categorical_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) between categorical probabilities (..., S, K), summed over S and K."""
    return (p * (p.clamp_min(1e-8).log() - q.clamp_min(1e-8).log())).sum((-1, -2))
