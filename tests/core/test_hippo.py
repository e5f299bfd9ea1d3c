"""HiPPO matrices and the S4D / S5 diagonal inits: signs, structure, eigenvalues."""

from __future__ import annotations

import math

import pytest
import torch

from ssmkit.core.hippo import (
    hippo_legs,
    hippo_legs_normal,
    hippo_normal_diagonal,
    s4d_init,
    s4d_inv,
    s4d_legs,
    s4d_lin,
    s4d_real,
    s5_init,
)


def _legs_by_similarity(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS built the other way round: A = T M T^-1 with T = diag(sqrt(2n+1))."""
    q = torch.arange(n, dtype=torch.float64)
    row, col = torch.meshgrid(q, q, indexing="ij")
    m = -(torch.where(row >= col, 2 * col + 1, torch.zeros_like(col)) - torch.diag(q))
    t = torch.diag(torch.sqrt(2 * q + 1))
    return t @ m @ torch.linalg.inv(t), torch.sqrt(2 * q + 1)


@pytest.mark.parametrize("n", [1, 4, 9])
def test_legs_matches_similarity_construction(n: int) -> None:
    a, b = hippo_legs(n)
    a_ref, b_ref = _legs_by_similarity(n)
    torch.testing.assert_close(a, a_ref)
    torch.testing.assert_close(b, b_ref)
    assert (torch.triu(a, diagonal=1) == 0).all()
    assert (torch.diagonal(a) == -(torch.arange(n) + 1.0)).all()
    if n > 1:
        assert a[1, 0] == pytest.approx(-math.sqrt(3.0))


def test_legs_normal_is_half_identity_plus_skew() -> None:
    a_n, p, _ = hippo_legs_normal(8)
    torch.testing.assert_close(torch.diagonal(a_n), torch.full((8,), -0.5, dtype=torch.float64))
    skew = a_n + 0.5 * torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(skew, -skew.T)
    torch.testing.assert_close(p, torch.sqrt(torch.arange(8, dtype=torch.float64) + 0.5))


@pytest.mark.parametrize("n", [2, 8, 16])
def test_normal_diagonalisation(n: int) -> None:
    diag = hippo_normal_diagonal(n)
    lam, v = diag.eigenvalues, diag.eigenvectors
    torch.testing.assert_close(lam.real, torch.full((n,), -0.5, dtype=torch.float64))
    eye = torch.eye(n, dtype=torch.complex128)
    torch.testing.assert_close(v.conj().T @ v, eye)
    a_n, _, _ = hippo_legs_normal(n)
    torch.testing.assert_close(v @ torch.diag(lam) @ v.conj().T, a_n.to(torch.complex128))
    # Conjugate pairs: the first half mirrors the second half.
    half, _ = diag.half()
    assert (half.imag > 0).all()
    torch.testing.assert_close(lam[: n // 2].flip(0), half.conj())


def test_s4d_closed_forms() -> None:
    lin = s4d_lin(4)
    torch.testing.assert_close(lin.imag, math.pi * torch.arange(4, dtype=torch.float64))
    assert (lin.real == -0.5).all()
    inv = s4d_inv(4)  # N = 8
    assert inv.imag[0].item() == pytest.approx(8 / math.pi * (8 - 1))
    assert inv.imag[-1].item() == pytest.approx(8 / math.pi * (8 / 7 - 1))
    real = s4d_real(3)
    torch.testing.assert_close(real.real, -torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert (real.imag == 0).all()
    legs, b = s4d_legs(4)
    assert legs.shape == (4,) and b.shape == (4,)
    torch.testing.assert_close(legs.real, torch.full((4,), -0.5, dtype=torch.float64))
    for name in ("lin", "inv", "real", "legs"):
        a, _ = s4d_init(name, 5)
        assert a.shape == (5,) and (a.real < 0).all()


def test_s5_init_block_diagonal() -> None:
    lam, v = s5_init(8, blocks=2, conj_sym=True)
    assert lam.shape == (4,) and v.shape == (8, 4)
    torch.testing.assert_close(lam[:2], lam[2:])
    assert (v[:4, 2:] == 0).all() and (v[4:, :2] == 0).all()
    torch.testing.assert_close(v.conj().T @ v, torch.eye(4, dtype=torch.complex128))
    lam_full, v_full = s5_init(6, blocks=1, conj_sym=False)
    assert lam_full.shape == (6,) and v_full.shape == (6, 6)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n must be a positive int"):
        hippo_legs(0)
    with pytest.raises(ValueError, match="init must be one of"):
        s4d_init("foo", 4)
    with pytest.raises(ValueError, match="divisible by blocks"):
        s5_init(8, blocks=3)
    with pytest.raises(ValueError, match="must be even"):
        s5_init(6, blocks=2, conj_sym=True)
