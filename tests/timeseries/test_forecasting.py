"""pytorch-forecasting round trip: from_dataset, fit, predict, plot_prediction."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pytorch_forecasting")
pl = pytest.importorskip("lightning.pytorch")

from pytorch_forecasting import TimeSeriesDataSet  # noqa: E402
from pytorch_forecasting.data import GroupNormalizer, MultiNormalizer  # noqa: E402

from ssmkit.timeseries.forecasting import SMambaForecaster, SpaceTimeForecaster  # noqa: E402

ENC, HOR = 24, 6


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for series in range(2):
        t = np.arange(160)
        parts.append(
            pd.DataFrame(
                {
                    "series": str(series),
                    "time_idx": t,
                    "value": np.sin(2 * np.pi * t / 12 + series) + 0.1 * rng.normal(size=160),
                    "other": np.cos(2 * np.pi * t / 12) + 3.0 * series,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _datasets(target: str | list[str]) -> tuple[TimeSeriesDataSet, TimeSeriesDataSet]:
    frame = _frame()
    normalizer = (
        GroupNormalizer(groups=["series"])
        if isinstance(target, str)
        else MultiNormalizer([GroupNormalizer(groups=["series"]) for _ in target])
    )
    train = TimeSeriesDataSet(
        frame[frame.time_idx < 130],
        time_idx="time_idx",
        target=target,
        group_ids=["series"],
        min_encoder_length=ENC,
        max_encoder_length=ENC,
        max_prediction_length=HOR,
        time_varying_unknown_reals=["value", "other"],
        target_normalizer=normalizer,
    )
    val = TimeSeriesDataSet.from_dataset(
        train, frame, min_prediction_idx=130, stop_randomization=True
    )
    return train, val


def test_smamba_forecaster_fit_predict_plot() -> None:
    train, val = _datasets("value")
    model = SMambaForecaster.from_dataset(
        train, model_kwargs=dict(d_model=16, d_ff=16, e_layers=1), learning_rate=3e-3
    )
    assert model.hparams.n_reals == len(train.reals)
    train_dl = train.to_dataloader(train=True, batch_size=16)
    val_dl = val.to_dataloader(train=False, batch_size=16)
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, train_dl, val_dl)
    out = model.predict(val_dl, mode="raw", return_x=True)
    assert out.output.prediction.shape[1:] == (HOR, 1)
    point = model.predict(val_dl)
    assert point.shape == (len(val), HOR) and np.isfinite(point.cpu().numpy()).all()
    # Predictions come back in the data's units: the validation level of "value" is ~0, std ~0.7.
    assert float(point.abs().mean()) < 3.0
    figure = model.plot_prediction(out.x, out.output, idx=0)
    assert figure is not None


def test_multi_target_and_fixed_encoder_required() -> None:
    train, _ = _datasets(["value", "other"])
    model = SpaceTimeForecaster.from_dataset(train, model_kwargs=dict(d_model=8, d_state=4))
    batch, _ = next(iter(train.to_dataloader(train=True, batch_size=4)))
    prediction = model(batch)["prediction"]
    assert isinstance(prediction, list) and len(prediction) == 2
    assert prediction[0].shape == (4, HOR, 1)
    variable = TimeSeriesDataSet(
        _frame(), time_idx="time_idx", target="value", group_ids=["series"],
        min_encoder_length=ENC // 2, max_encoder_length=ENC, max_prediction_length=HOR,
        time_varying_unknown_reals=["value"],
    )  # fmt: skip
    with pytest.raises(ValueError, match="fixed lookback"):
        SMambaForecaster.from_dataset(variable)
