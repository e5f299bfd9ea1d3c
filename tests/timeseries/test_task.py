"""ForecastTask training on real ETTh1 and the ``ssmkit forecast`` CLI round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")
pl = pytest.importorskip("lightning.pytorch")

from ssmkit.timeseries.cli import main  # noqa: E402
from ssmkit.timeseries.data import CSVForecastDataModule  # noqa: E402
from ssmkit.timeseries.task import ForecastTask  # noqa: E402


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_one_epoch_on_etth1_improves(shared_data: Path) -> None:
    csv = shared_data / "ett" / "ETTh1.csv"
    data = CSVForecastDataModule(
        str(csv), seq_len=96, label_len=48, pred_len=24, batch_size=32, eval_batch_size=128
    )
    task = ForecastTask(
        "timeseries.smamba",
        model_kwargs=dict(d_model=32, d_ff=32, e_layers=1, d_state=2),
        pred_len=24,
        learning_rate=2e-3,
    )
    # The first 3 test batches (384 windows, not shuffled) before and after 1 short epoch.
    before = _trainer(limit_test_batches=3).test(task, datamodule=data, verbose=False)[0]
    trainer = _trainer(max_epochs=1, limit_train_batches=25, limit_val_batches=1)
    trainer.fit(task, datamodule=data)
    after = _trainer(limit_test_batches=3).test(task, datamodule=data, verbose=False)[0]
    assert after["test_mse"] < 0.9 * before["test_mse"], (before, after)
    # Original-unit metrics use the training scaler: MAE scales by the per-channel std.
    assert after["test_mae_orig"] > after["test_mae"]
    torch.testing.assert_close(task.target_std.double(), torch.as_tensor(data.std))


def test_features_ms_forecasts_the_target_only() -> None:
    task = ForecastTask("timeseries.dlinear", seq_len=16, pred_len=4, enc_in=3, features="MS")
    assert task(torch.randn(2, 16, 3)).shape == (2, 4, 1)
    assert task.target_mean.shape == (1,)
    with pytest.raises(ValueError, match="enc_in must be 1"):
        ForecastTask("timeseries.dlinear", enc_in=3, features="S")


def test_cli_train_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = 360
    t = np.arange(rows)
    frame = pd.DataFrame(
        {
            "date": pd.date_range("2021-03-01", periods=rows, freq="h"),
            "load": np.sin(2 * np.pi * t / 24) + 0.01 * t,
            "temp": np.cos(2 * np.pi * t / 24),
        }
    )
    csv = tmp_path / "load.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--csv", str(csv), "--target", "load", "--horizon", "8", "--seq-len", "24",
            "--label-len", "12", "--epochs", "1", "--out-dir", str(out), "--no-progress",
            "--model-kwargs", '{"d_model": 16, "d_ff": 16, "e_layers": 1}',
        ]
    )  # fmt: skip
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(last)
    assert {"mse", "mae", "mae_orig"} <= set(metrics) and np.isfinite(metrics["mse"])
    assert json.loads((out / "metrics.json").read_text())["mse"] == metrics["mse"]

    forecast_csv = tmp_path / "forecast.csv"
    assert main(["predict", "--checkpoint", str(out / "model.ckpt"), "--csv", str(csv),
                 "--out", str(forecast_csv)]) == 0  # fmt: skip
    forecast = pd.read_csv(forecast_csv, parse_dates=["date"])
    assert list(forecast.columns) == ["date", "temp", "load"]
    assert len(forecast) == 8
    assert forecast.date.iloc[0] == frame.date.iloc[-1] + pd.Timedelta(hours=1)
    assert np.isfinite(forecast[["temp", "load"]].to_numpy()).all()
    assert forecast_csv.with_suffix(".png").stat().st_size > 1000
    with pytest.raises(ValueError, match="input CSV"):
        main(["predict", "--checkpoint", str(out / "model.ckpt"), "--csv", str(csv),
              "--out", str(csv)])  # fmt: skip
