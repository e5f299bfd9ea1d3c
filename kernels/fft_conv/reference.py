"""Reference long convolution by FFT (S4/S4D, SpaceTime), pure PyTorch in fp32.

``y = irfft(rfft(u, n) * rfft(K, n), n)[..., :L]`` with ``n = 2L``: the linear convolution of two
length-L signals has length 2L - 1, so a 2L-point transform never wraps around (no circular
aliasing). Bidirectional kernels (REFERENCES.md §1.4) put the backward kernel, flipped, in the
upper half of the 2L-point kernel: ``K = pad(k0, (0, L)) + pad(flip(k1), (L, 0))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fft_conv_ref(u: torch.Tensor, k: torch.Tensor, bidirectional: bool = False) -> torch.Tensor:
    """Causal (or bidirectional) convolution of ``u`` with per-channel kernels, in fp32.

    Args:
        u: ``(B, H, L)``.
        k: ``(H, Lk)`` causal kernel, or ``(2, H, Lk)`` forward/backward kernels when
            ``bidirectional``; ``Lk <= L`` (zero-padded to L).
        bidirectional: add the anticausal term ``Σ_{m>=1} k1[m-1] u[t+m]``.

    Returns:
        ``y`` ``(B, H, L)`` in fp32 (float64 for float64 inputs).
    """
    dtype = torch.float64 if torch.float64 in (u.dtype, k.dtype) else torch.float32
    length = u.shape[-1]
    n = 2 * length
    k = F.pad(k.to(dtype), (0, length - k.shape[-1]))
    if bidirectional:
        k = F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))  # (H, 2L)
    u_f = torch.fft.rfft(u.to(dtype), n=n)
    k_f = torch.fft.rfft(k, n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :length]
