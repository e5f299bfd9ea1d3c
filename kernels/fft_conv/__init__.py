"""``fft_conv``: long causal / bidirectional convolution via real FFTs (S4D, SpaceTime).

The reference is also the fast CPU path: ``torch.fft`` (pocketfft/MKL) is already O(L log L) and
vectorised, so ``backend="cpu"`` runs the same code, and so does ``"triton"`` (cuFFT on CUDA has
no Triton equivalent worth writing). See README.md.
"""

from __future__ import annotations

import torch

from ssmkit.kernels._dispatch import check_real_floating, resolve_backend
from ssmkit.kernels.fft_conv.reference import fft_conv_ref

__all__ = ["fft_conv"]


def fft_conv(
    u: torch.Tensor, k: torch.Tensor, bidirectional: bool = False, *, backend: str = "auto"
) -> torch.Tensor:
    """Convolve each channel of ``u`` with its kernel: ``y[b, h, t] = Σ_j k[h, j] u[b, h, t - j]``.

    Args:
        u: ``(B, H, L)`` real.
        k: ``(H, Lk)`` causal kernel with ``Lk <= L`` (zero-padded to L); when ``bidirectional``,
            ``(2, H, Lk)``: ``y = causal(u, k[0]) + anticausal(u, k[1])`` where
            ``anticausal(u, k1)[t] = Σ_{m>=1} k1[m-1] u[t+m]``.
        bidirectional: use the two-kernel form.
        backend: ``"auto"``, ``"ref"``, ``"cpu"`` or ``"triton"`` (all run the torch.fft path).

    Returns:
        ``y`` ``(B, H, L)`` in u's dtype, computed in fp32.
    """
    for name, t in (("u", u), ("k", k)):
        check_real_floating(
            "fft_conv", name, t, "complex kernels: pass 2*Re of the kernel, as S4D does"
        )
    if u.dim() != 3:
        raise ValueError(f"fft_conv: `u` must have shape (B, H, L), got {tuple(u.shape)}.")
    _, channels, length = u.shape
    want = (2, channels) if bidirectional else (channels,)
    if k.dim() != len(want) + 1 or tuple(k.shape[:-1]) != want:
        form = "(2, H, Lk)" if bidirectional else "(H, Lk)"
        raise ValueError(
            f"fft_conv: `k` must have shape {form} with H = {channels}"
            f"{' when bidirectional=True' if bidirectional else ''}, got {tuple(k.shape)}."
        )
    if not 1 <= k.shape[-1] <= length:
        raise ValueError(
            f"fft_conv: kernel length Lk = {k.shape[-1]} must be in [1, L = {length}]; "
            "crop the kernel to the sequence length (longer taps never touch the output)."
        )
    if k.device != u.device:
        raise ValueError(f"fft_conv: `k` is on {k.device} but `u` is on {u.device}.")
    resolve_backend("fft_conv", backend, u.device)  # validates the request; one implementation
    return fft_conv_ref(u, k, bidirectional).to(u.dtype)
