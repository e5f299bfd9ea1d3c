"""Separation losses and metrics: PIT negative SI-SNR, SI-SNRi and SDRi.

Definitions (Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019; utterance-level PIT of
Kolbaek et al., 2017): with zero-mean signals, ``alpha = <s_hat, s> / ||s||^2`` and
``SI-SNR = 10 log10(||alpha s||^2 / ||s_hat - alpha s||^2)``. PIT takes, per utterance, the speaker
permutation with the best mean SI-SNR. The improvement (SI-SNRi) subtracts the mean SI-SNR of the
unprocessed mixture against each reference. SDR is BSS-eval's (torchmetrics ``signal_distortion_ratio``).

torchmetrics is imported inside the functions (``pip install "ssmkit[audio]"``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import ModuleType

import torch

from ssmkit.core.optional import require


def _functional() -> ModuleType:
    require("torchmetrics", "audio")
    import torchmetrics.functional.audio as tfa

    return tfa


def _check_pair(preds: torch.Tensor, target: torch.Tensor, fn: str) -> None:
    if preds.dim() != 3 or target.dim() != 3:
        raise ValueError(
            f"{fn}: preds and target must be (B, n_src, T); got preds {tuple(preds.shape)} and "
            f"target {tuple(target.shape)}. Add a batch axis with .unsqueeze(0) for one utterance."
        )
    if preds.shape != target.shape:
        raise ValueError(
            f"{fn}: preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same "
            "shape (same number of sources and samples); trim or pad the estimates to the "
            "reference length."
        )


def _pit(
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    preds: torch.Tensor,
    target: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterance-level PIT: best mean metric over speaker permutations (speaker-wise search).

    Same result as torchmetrics' ``permutation_invariant_training(mode="speaker-wise")``, whose
    cached permutation tensors break autograd after a validation run in inference mode.

    Returns:
        ``best (B,)`` and ``perm (B, S)`` with ``preds[b, perm[b, k]]`` matched to ``target[b, k]``.
    """
    n = target.shape[1]
    b, _, length = target.shape
    shape = (b, n, n, length)
    pairwise = metric(
        preds[:, :, None].expand(shape), target[:, None, :].expand(shape)
    )  # (B, S, S)
    perms = torch.tensor(list(itertools.permutations(range(n))), device=preds.device)  # (P, S)
    targets = torch.arange(n, device=preds.device)
    scores = pairwise[:, perms, targets].mean(-1)  # (B, P)
    best, index = scores.max(dim=-1)
    return best, perms[index]


def si_snr(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SNR in dB over the last axis, ``(..., T) -> (...)``."""
    return _functional().scale_invariant_signal_noise_ratio(preds, target)


def pit_si_snr(
    preds: torch.Tensor, target: torch.Tensor, clip_db: float | None = None
) -> torch.Tensor:
    """Permutation-invariant negative SI-SNR loss (the Mamba-TasNet / Conv-TasNet training loss).

    Args:
        preds: estimates ``(B, n_src, T)``.
        target: references ``(B, n_src, T)``.
        clip_db: if given, each utterance's SI-SNR is capped at this value (SpeechBrain uses 30 dB
            via a -30 floor on the loss) so that solved utterances stop dominating.

    Returns:
        Scalar loss: ``-mean_b max_perm mean_k SI-SNR(preds[b, perm[k]], target[b, k])``.
    """
    _check_pair(preds, target, "pit_si_snr")
    tfa = _functional()
    best, _ = _pit(tfa.scale_invariant_signal_noise_ratio, preds.float(), target.float())
    if clip_db is not None:
        best = best.clamp(max=clip_db)
    return -best.mean()


def pit_reorder(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``preds (B, n_src, T)`` permuted (per utterance) to best match ``target`` by SI-SNR."""
    _check_pair(preds, target, "pit_reorder")
    tfa = _functional()
    _, perm = _pit(tfa.scale_invariant_signal_noise_ratio, preds.float(), target.float())
    return preds.gather(1, perm[..., None].expand_as(preds))


def si_snr_improvement(
    preds: torch.Tensor, target: torch.Tensor, mixture: torch.Tensor
) -> torch.Tensor:
    """Per-utterance PIT SI-SNRi in dB.

    Args:
        preds: estimates ``(B, n_src, T)``.
        target: references ``(B, n_src, T)``.
        mixture: the input mixture ``(B, T)`` or ``(B, 1, T)``.

    Returns:
        ``(B,)``: ``max_perm mean_k SI-SNR(preds, target) - mean_k SI-SNR(mixture, target_k)``.
    """
    _check_pair(preds, target, "si_snr_improvement")
    mixture = _as_mixture(mixture, target, "si_snr_improvement")
    tfa = _functional()
    best, _ = _pit(tfa.scale_invariant_signal_noise_ratio, preds.float(), target.float())
    base = tfa.scale_invariant_signal_noise_ratio(mixture.float().expand_as(target), target.float())
    return best - base.mean(-1)


def sdr_improvement(
    preds: torch.Tensor, target: torch.Tensor, mixture: torch.Tensor
) -> torch.Tensor:
    """Per-utterance PIT SDRi in dB (BSS-eval SDR, permutation chosen by SDR), ``(B,)``."""
    _check_pair(preds, target, "sdr_improvement")
    mixture = _as_mixture(mixture, target, "sdr_improvement")
    tfa = _functional()
    preds64, target64 = preds.double(), target.double()
    # This torch/MKL build's batched LU solve fails ("Pivots given to lu_solve ...") with more than
    # one intra-op thread on CPU; BSS-eval SDR is cheap, so solve single-threaded.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best, _ = _pit(tfa.signal_distortion_ratio, preds64, target64)
        base = tfa.signal_distortion_ratio(mixture.double().expand_as(target64), target64)
    finally:
        torch.set_num_threads(threads)
    return (best - base.mean(-1)).float()


def _as_mixture(mixture: torch.Tensor, target: torch.Tensor, fn: str) -> torch.Tensor:
    if mixture.dim() == 2:
        mixture = mixture[:, None, :]
    if mixture.dim() != 3 or mixture.shape[1] != 1 or mixture.shape[-1] != target.shape[-1]:
        raise ValueError(
            f"{fn}: mixture must be (B, T) or (B, 1, T) with T = {target.shape[-1]} matching the "
            f"references; got {tuple(mixture.shape)}."
        )
    return mixture
