"""Forecasters: shapes, the companion-SSM math against dense matrix powers, normalisation."""

from __future__ import annotations

import pytest
import torch

from ssmkit.timeseries import DLinear, RevIN, SMamba, SpaceTime
from ssmkit.timeseries.dlinear import MovingAverage
from ssmkit.timeseries.spacetime import (
    ClosedLoopSSM,
    CompanionSSM,
    _l1_bounded,
    companion,
    companion_sequence,
    preprocessing_kernel,
)


def test_companion_sequence_equals_matrix_powers() -> None:
    torch.manual_seed(0)
    a = _l1_bounded(torch.randn(3, 5, dtype=torch.float64) * 3)
    x0 = torch.randn(3, 5, dtype=torch.float64)
    windows = companion_sequence(a, x0, 40).unfold(-1, 5, 1)  # (3, 41, 5)
    matrix, state = companion(a), x0
    for t in range(41):
        torch.testing.assert_close(windows[:, t], state)
        state = torch.einsum("hij,hj->hi", matrix, state)


def test_closed_loop_decoder_equals_recurrence() -> None:
    torch.manual_seed(0)
    layer = ClosedLoopSSM(d_model=2, d_state=4).double()
    with torch.no_grad():
        layer.a.mul_(20)
        layer.gain.mul_(20)
    u = torch.randn(1, 12, 2, dtype=torch.float64)
    y_lag, y_future, u_next = layer(u, horizon=5)
    a = _l1_bounded(layer.a)
    row = _l1_bounded(a + layer.gain)
    open_loop, closed_loop = companion(a), companion(row)
    for h in range(2):
        x = torch.zeros(4, dtype=torch.float64)
        b = torch.zeros(4, dtype=torch.float64)
        b[-1] = 1.0
        for t in range(12):
            x = open_loop[h] @ x + b * u[0, t, h]
            torch.testing.assert_close(y_lag[0, t, h], layer.c[h] @ x)
            torch.testing.assert_close(u_next[0, t, h], (row - a)[h] @ x)
        for t in range(5):
            x = closed_loop[h] @ x  # the predicted input is fed back
            torch.testing.assert_close(y_future[0, t, h], layer.c[h] @ x)


def test_companion_kernel_matches_definition() -> None:
    layer = CompanionSSM(d_model=2, d_state=3).double()
    k = layer.kernel(10)
    matrix = companion(_l1_bounded(layer.a))
    for h in range(2):
        x = layer.b[h]
        for t in range(10):
            torch.testing.assert_close(k[h, t], layer.c[h] @ x)
            x = matrix[h] @ x


def test_preprocessing_kernels() -> None:
    assert preprocessing_kernel("diff2").tolist() == [1.0, -2.0, 1.0]
    ma = preprocessing_kernel("ma4")
    torch.testing.assert_close(ma, torch.tensor([0.75, -0.25, -0.25, -0.25]))
    with pytest.raises(ValueError, match="preprocessing kernel"):
        preprocessing_kernel("fourier")


@pytest.mark.parametrize(
    "model",
    [
        lambda: SMamba(seq_len=24, pred_len=12, enc_in=3, d_model=16, d_ff=16, e_layers=1),
        lambda: SpaceTime(seq_len=24, pred_len=12, enc_in=3, d_model=16, d_state=8),
        lambda: DLinear(seq_len=24, pred_len=12, enc_in=3, moving_avg=5, individual=True),
    ],
    ids=["smamba", "spacetime", "dlinear"],
)
def test_forecaster_shapes_and_scale_equivariance(model) -> None:
    torch.manual_seed(0)
    net = model().eval()
    x, marks = torch.randn(2, 24, 3), torch.rand(2, 24, 4) - 0.5
    y = net(x, marks)
    assert y.shape == (2, 12, 3) and torch.isfinite(y).all()
    if not isinstance(net, DLinear):  # instance normalisation: shifting the input shifts the output
        torch.testing.assert_close(net(x + 5.0, marks), y + 5.0, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="expects x_enc"):
        net(torch.randn(2, 24, 5), marks)


def test_smamba_time_feature_tokens_matter() -> None:
    torch.manual_seed(0)
    net = SMamba(seq_len=16, pred_len=4, enc_in=2, d_model=16, d_ff=16, e_layers=1).eval()
    x = torch.randn(1, 16, 2)
    marks = torch.rand(1, 16, 4) - 0.5
    assert not torch.allclose(net(x, marks), net(x, None))
    with pytest.raises(ValueError, match="x_mark_enc"):
        net(x, torch.rand(1, 8, 4))


def test_revin_round_trip_and_moving_average() -> None:
    x = torch.randn(4, 32, 3) * 7 + 2
    revin = RevIN(3, affine=True)
    z = revin.norm(x)
    torch.testing.assert_close(z.mean(1), torch.zeros(4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(revin.denorm(z), x, atol=1e-4, rtol=1e-4)
    trend = MovingAverage(5)(torch.arange(10.0).view(1, 10, 1))
    assert trend.shape == (1, 10, 1)
    torch.testing.assert_close(trend[0, 2:8, 0], torch.arange(2.0, 8.0))  # linear stays linear
