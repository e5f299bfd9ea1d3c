"""CSVForecastDataModule follows Time-Series-Library's rules; bad CSVs raise clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("lightning")

from ssmkit.timeseries.data import CSVForecastDataModule, split_borders  # noqa: E402
from ssmkit.timeseries.timefeatures import time_features  # noqa: E402

ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


def _ett_csv(path: Path, rows: int = 14500) -> Path:
    rng = np.random.default_rng(0)
    dates = pd.date_range("2016-07-01", periods=rows, freq="h")
    values = rng.normal(size=(rows, 7)).cumsum(0)
    frame = pd.DataFrame(values, columns=ETT_COLUMNS)
    frame.insert(0, "date", dates.strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(path, index=False)
    return path


def _small_csv(path: Path, rows: int = 300, **edits: object) -> Path:
    dates = pd.date_range("2020-01-01", periods=rows, freq="h")
    t = np.arange(rows)
    frame = pd.DataFrame(
        {"date": dates, "a": np.sin(t / 5.0), "OT": np.cos(t / 7.0), "b": t / rows}
    )
    for key, value in edits.items():
        frame.loc[:, key] = value
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def ett_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ett_csv(tmp_path_factory.mktemp("ett") / "ETTh1.csv")


def test_ett_hour_borders_equal_tslib(ett_csv: Path) -> None:
    dm = CSVForecastDataModule(str(ett_csv), seq_len=96, pred_len=24, label_len=48)
    dm.setup()
    assert dm.border1s == [0, 8640 - 96, 11520 - 96]
    assert dm.border2s == [8640, 11520, 14400]
    # TSLib's window count per split: rows - seq_len - pred_len + 1.
    assert len(dm.windows("train")) == 8640 - 96 - 24 + 1
    assert len(dm.windows("val")) == 11520 - (8640 - 96) - 96 - 24 + 1
    assert len(dm.windows("test")) == 14400 - (11520 - 96) - 96 - 24 + 1
    # The first test forecast starts exactly at the split point (row 11520).
    _, y, _, _ = dm.windows("test")[0]
    raw = pd.read_csv(ett_csv)[ETT_COLUMNS].to_numpy()
    scaled_row = (raw[11520] - dm.mean) / dm.std
    np.testing.assert_allclose(y[48].numpy(), scaled_row, rtol=1e-5, atol=1e-5)


def test_split_borders_minute_and_ratio() -> None:
    assert split_borders(69680, 96, "ett_minute") == (
        [0, 34560 - 96, 46080 - 96],
        [34560, 46080, 57600],
    )
    n = 7588  # exchange_rate
    assert split_borders(n, 96, "ratio") == ([0, 5311 - 96, 7588 - 1517 - 96], [5311, 6071, 7588])


def test_scaler_uses_training_rows_only(tmp_path: Path) -> None:
    path = _small_csv(tmp_path / "series.csv", rows=400)
    dm = CSVForecastDataModule(str(path), seq_len=24, label_len=12, pred_len=12, split="ratio")
    dm.load()
    frame = pd.read_csv(path)
    train = frame[["a", "b", "OT"]].to_numpy()[:280]
    np.testing.assert_allclose(dm.mean, train.mean(0))
    np.testing.assert_allclose(dm.std, train.std(0))
    # Changing test rows leaves the scaler unchanged.
    frame.loc[350:, "a"] += 100.0
    frame.to_csv(tmp_path / "changed.csv", index=False)
    dm2 = CSVForecastDataModule(
        str(tmp_path / "changed.csv"), seq_len=24, label_len=12, pred_len=12
    )
    dm2.load()
    np.testing.assert_allclose(dm2.mean, dm.mean)
    # Columns are reordered TSLib-style: target last.
    assert dm.table.columns == ["a", "b", "OT"]


@pytest.mark.parametrize(("features", "c_in", "c_out"), [("M", 3, 3), ("S", 1, 1), ("MS", 3, 1)])
def test_window_shapes(tmp_path: Path, features: str, c_in: int, c_out: int) -> None:
    path = _small_csv(tmp_path / "series.csv")
    dm = CSVForecastDataModule(
        str(path), features=features, seq_len=24, label_len=12, pred_len=6, batch_size=8
    )
    dm.setup()
    x, y, x_mark, y_mark = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 24, c_in) and y.shape == (8, 18, c_out)
    assert x_mark.shape == (8, 24, 4) and y_mark.shape == (8, 18, 4)
    assert dm.n_features == c_in and dm.n_targets == c_out
    if features == "MS":  # the target is the last input column
        xs, ys, _, _ = dm.windows("train")[0]
        np.testing.assert_allclose(xs[12:, -1], ys[:12, 0])
    # drop_last=False: every test window is seen.
    assert sum(len(b[0]) for b in dm.test_dataloader()) == len(dm.windows("test"))


def test_time_features_hourly_match_tslib() -> None:
    dates = pd.DatetimeIndex(["2016-07-01 00:00", "2016-12-31 23:00"])
    feats = time_features(dates, "h")
    # HourOfDay, DayOfWeek, DayOfMonth, DayOfYear, each scaled to [-0.5, 0.5].
    np.testing.assert_allclose(feats[0], [-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5], atol=1e-6)
    np.testing.assert_allclose(feats[1], [0.5, 5 / 6 - 0.5, 0.5, 365 / 365 - 0.5], atol=1e-6)
    assert time_features(dates, "t").shape == (2, 5)


def test_headerless_gz_gets_generated_names(tmp_path: Path) -> None:
    path = tmp_path / "rates.txt.gz"
    rng = np.random.default_rng(1)
    with gzip.open(path, "wt") as handle:
        for row in rng.random((300, 4)):
            handle.write(",".join(f"{v:.6f}" for v in row) + "\n")
    dm = CSVForecastDataModule(str(path), seq_len=24, label_len=12, pred_len=6, freq="d")
    dm.setup()
    assert dm.table.columns == ["0", "1", "2", "OT"]
    assert not dm.table.has_dates and len(dm.windows("train")) == 210 - 30 + 1


@pytest.mark.parametrize(
    ("kwargs", "edit", "match"),
    [
        ({"target": "nope"}, None, "target column 'nope' not found"),
        ({"date": "when"}, None, "date column 'when' not found"),
        ({}, "duplicate", "duplicate timestamp"),
        ({}, "unsorted", "not increasing"),
        ({}, "nan", "missing values"),
        ({"pred_len": 60, "seq_len": 96}, None, "too short"),
    ],
)
def test_bad_csvs_raise(tmp_path: Path, kwargs: dict, edit: str | None, match: str) -> None:
    path = _small_csv(tmp_path / "bad.csv")
    frame = pd.read_csv(path)
    if edit == "duplicate":
        frame.loc[10, "date"] = frame.loc[9, "date"]
    elif edit == "unsorted":
        frame.loc[[10, 11], "date"] = frame.loc[[11, 10], "date"].to_numpy()
    elif edit == "nan":
        frame.loc[5, "a"] = np.nan
    frame.to_csv(path, index=False)
    args = {"seq_len": 24, "label_len": 12, "pred_len": 6, **kwargs}
    dm = CSVForecastDataModule(str(path), **args)
    with pytest.raises(ValueError, match=match):
        dm.setup()


def test_nan_fill_option(tmp_path: Path) -> None:
    path = _small_csv(tmp_path / "gaps.csv")
    frame = pd.read_csv(path)
    frame.loc[5, "a"] = np.nan
    frame.to_csv(path, index=False)
    dm = CSVForecastDataModule(
        str(path), seq_len=24, label_len=12, pred_len=6, fill_missing="interpolate"
    )
    dm.setup()
    assert np.isfinite(dm.data).all()
    np.testing.assert_allclose(dm.table.values[5, 0], (frame.a[4] + frame.a[6]) / 2)


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="features"):
        CSVForecastDataModule("x.csv", features="X")
    with pytest.raises(ValueError, match="label_len"):
        CSVForecastDataModule("x.csv", seq_len=8, label_len=16)
    with pytest.raises(ValueError, match="freq"):
        CSVForecastDataModule("x.csv", freq="fortnight")
