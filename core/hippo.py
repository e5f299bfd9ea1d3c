"""HiPPO matrices and the diagonal initialisations of S4D and S5.

HiPPO-LegS (Gu et al., "HiPPO: Recurrent Memory with Optimal Polynomial Projections", NeurIPS
2020, arXiv 2008.07669) is the continuous-time state matrix that projects a signal's history onto
Legendre polynomials. It is not normal, but adding the rank-one term ``P Pᵀ`` with
``P_n = sqrt(n + 1/2)`` gives HiPPO-N ``= -1/2 I + S`` with ``S`` skew-symmetric, which is unitarily
diagonalisable: its eigenvalues all have real part ``-1/2`` (Gu et al., "How to Train Your HiPPO",
arXiv 2206.12037; Smith et al., "Simplified State Space Layers for Sequence Modeling" (S5), ICLR
2023, arXiv 2208.04933).

The S4D inits (Gu et al., "On the Parameterization and Initialization of Diagonal State Space
Models", NeurIPS 2022, arXiv 2206.11893) are closed-form diagonal approximations:

- S4D-Lin: ``A_n = -1/2 + i·π·n``
- S4D-Inv: ``A_n = -1/2 + i·(N/π)·(N/(2n+1) - 1)``
- S4D-Real: ``A_n = -(n + 1)`` (Mamba's ``A_log = log(1..N)``)
- S4D-LegS: the eigenvalues of HiPPO-N.

All matrices are built in float64 (the eigendecomposition needs it) and returned as float64 or
complex128; callers cast to their parameter dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

S4D_INITS = ("lin", "inv", "real", "legs")


def _check_size(name: str, value: int, even: bool = False) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if even and value % 2:
        raise ValueError(
            f"{name} must be even (conjugate pairs of modes), got {value}; use {value + 1}."
        )


def hippo_legs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS state matrix and input vector (the paper's definition, signs included).

    ``A_nk = -sqrt(2n+1)·sqrt(2k+1)`` for ``n > k``, ``-(n+1)`` for ``n = k``, 0 above the
    diagonal; ``B_n = sqrt(2n+1)``.

    Args:
        n: state size N.

    Returns:
        ``A`` (N, N) and ``B`` (N,), float64.
    """
    _check_size("n", n)
    q = torch.sqrt(2.0 * torch.arange(n, dtype=torch.float64) + 1.0)
    a = -torch.tril(q[:, None] * q[None, :], diagonal=-1)
    a = a - torch.diag(torch.arange(n, dtype=torch.float64) + 1.0)
    return a, q.clone()


def hippo_legs_normal(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-N: the normal part of HiPPO-LegS, ``A + P Pᵀ = -1/2 I + S`` with ``S`` skew-symmetric.

    Args:
        n: state size N.

    Returns:
        ``A_normal`` (N, N), the low-rank factor ``P`` (N,) with ``P_n = sqrt(n + 1/2)``, and
        ``B`` (N,), all float64.
    """
    a, b = hippo_legs(n)
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    return a + p[:, None] * p[None, :], p, b


@dataclass(frozen=True)
class HippoDiagonal:
    """Eigendecomposition of HiPPO-N, ``A_normal = V diag(Lambda) Vᴴ`` (V unitary).

    Attributes:
        eigenvalues: ``Lambda`` (N,) complex128, real parts all ``-1/2``; sorted by imaginary part,
            so the first ``N/2`` are the conjugates of the last ``N/2`` (for even N).
        eigenvectors: ``V`` (N, N) complex128, unitary.
        b: HiPPO-LegS input vector (N,) float64, in the original (non-diagonal) basis.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    b: torch.Tensor

    def half(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``N/2`` modes with positive imaginary part and their eigenvectors (conj_sym).

        Returns:
            ``Lambda`` (N/2,) complex128 and ``V`` (N, N/2) complex128.
        """
        n = self.eigenvalues.shape[0]
        _check_size("state size", n, even=True)
        return self.eigenvalues[n // 2 :], self.eigenvectors[:, n // 2 :]


def hippo_normal_diagonal(n: int) -> HippoDiagonal:
    """Diagonalise HiPPO-N (the S5 / ConvS5 initialisation).

    The skew-symmetric part ``S`` is diagonalised through the Hermitian matrix ``-i·S`` with
    ``torch.linalg.eigh`` (stable, eigenvectors exactly unitary); the real part of every eigenvalue
    is the mean of the diagonal of HiPPO-N, which is ``-1/2``.

    Args:
        n: state size N.
    """
    a_normal, _, b = hippo_legs_normal(n)
    real = torch.diagonal(a_normal).mean()
    skew = a_normal - torch.diag(torch.diagonal(a_normal))
    imag, vectors = torch.linalg.eigh(skew.to(torch.complex128) * -1j)
    eigenvalues = torch.complex(real.expand(n).clone(), imag)
    return HippoDiagonal(eigenvalues=eigenvalues, eigenvectors=vectors, b=b)


def s4d_lin(n_modes: int) -> torch.Tensor:
    """S4D-Lin: ``A_n = -1/2 + i·π·n``, n = 0..n_modes-1. Returns (n_modes,) complex128."""
    _check_size("n_modes", n_modes)
    n = torch.arange(n_modes, dtype=torch.float64)
    return torch.complex(torch.full_like(n, -0.5), math.pi * n)


def s4d_inv(n_modes: int) -> torch.Tensor:
    """S4D-Inv: ``A_n = -1/2 + i·(N/π)·(N/(2n+1) - 1)`` with N = 2·n_modes the state size.

    Returns (n_modes,) complex128.
    """
    _check_size("n_modes", n_modes)
    n = torch.arange(n_modes, dtype=torch.float64)
    size = 2.0 * n_modes
    return torch.complex(torch.full_like(n, -0.5), size / math.pi * (size / (2.0 * n + 1.0) - 1.0))


def s4d_real(n_modes: int) -> torch.Tensor:
    """S4D-Real: ``A_n = -(n + 1)``. Returns (n_modes,) complex128 with zero imaginary part."""
    _check_size("n_modes", n_modes)
    n = torch.arange(n_modes, dtype=torch.float64)
    return torch.complex(-(n + 1.0), torch.zeros_like(n))


def s4d_legs(n_modes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-LegS: the HiPPO-N eigenvalues of a state of size 2·n_modes (positive-imaginary half).

    Returns:
        ``A`` (n_modes,) complex128 and the input vector in the eigenbasis ``Vᴴ B`` (n_modes,)
        complex128, which S4D folds into its output vector C.
    """
    _check_size("n_modes", n_modes)
    diag = hippo_normal_diagonal(2 * n_modes)
    eigenvalues, vectors = diag.half()
    return eigenvalues, vectors.conj().T @ diag.b.to(torch.complex128)


def s4d_init(init: str, n_modes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal ``A`` and input vector ``B`` for one of :data:`S4D_INITS`.

    Args:
        init: ``"lin"``, ``"inv"``, ``"real"`` or ``"legs"``.
        n_modes: number of stored (complex) modes, ``d_state // 2`` in S4D.

    Returns:
        ``A`` (n_modes,) complex128 with negative real part, ``B`` (n_modes,) complex128 (ones
        except for ``"legs"``).
    """
    if init == "legs":
        return s4d_legs(n_modes)
    inits = {"lin": s4d_lin, "inv": s4d_inv, "real": s4d_real}
    if init not in inits:
        raise ValueError(f"init must be one of {S4D_INITS}, got {init!r}.")
    return inits[init](n_modes), torch.ones(n_modes, dtype=torch.complex128)


def s5_init(
    d_state: int, blocks: int = 1, conj_sym: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-diagonal HiPPO-N initialisation of S5 / ConvS5.

    The state of size ``d_state`` is split into ``blocks`` blocks; each block is the HiPPO-N of
    size ``d_state / blocks``, and ``V`` is block-diagonal. With ``conj_sym`` only the modes with
    positive imaginary part are kept (half the state; the output is then ``2·Re(C x)``).

    Args:
        d_state: full state size P.
        blocks: number of diagonal blocks J (P % J == 0, and P/J even when conj_sym).
        conj_sym: keep one mode of each conjugate pair.

    Returns:
        ``Lambda`` (P_s,) complex128 and ``V`` (P, P_s) complex128 with orthonormal columns, where
        P_s = P/2 when conj_sym else P. ``B̃ = Vᴴ B`` and ``C̃ = C V`` map real B (P, H) and
        C (H, P) into the eigenbasis.
    """
    _check_size("d_state", d_state)
    _check_size("blocks", blocks)
    if d_state % blocks:
        raise ValueError(f"d_state ({d_state}) must be divisible by blocks ({blocks}).")
    block = d_state // blocks
    if conj_sym:
        _check_size("d_state / blocks", block, even=True)
    diag = hippo_normal_diagonal(block)
    lam, vec = diag.half() if conj_sym else (diag.eigenvalues, diag.eigenvectors)
    return lam.repeat(blocks), torch.block_diag(*([vec] * blocks))
