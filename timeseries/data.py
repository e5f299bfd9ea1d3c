"""Forecasting windows from any CSV, with Time-Series-Library's rules.

The rules (Wu et al., Time-Series-Library, ``data_provider/data_loader.py``), reimplemented:

- columns are reordered to ``[date, *other features, target]``;
- ``split="ett_hour"``: train rows [0, 8640), validation [8640 - seq_len, 11520), test
  [11520 - seq_len, 14400) (12/4/4 months of 30 days); ``"ett_minute"`` is the same times 4;
  ``"ratio"``: train int(0.7 n), test int(0.2 n), validation the rest, validation and test
  starting ``seq_len`` rows early so their first forecast begins at the split point;
- a standard scaler (mean, population std) fit on the training rows only;
- ``features``: ``"M"`` all -> all, ``"S"`` target -> target, ``"MS"`` all -> target (last column);
- windows ``x = data[i : i+seq_len]``, ``y = data[i+seq_len-label_len : i+seq_len+pred_len]``,
  ``n - seq_len - pred_len + 1`` of them; the test loader keeps the last partial batch.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ssmkit.timeseries.timefeatures import PANDAS_FREQ, parse_freq, time_features

SPLITS = ("auto", "ett_hour", "ett_minute", "ratio")
FEATURES = ("M", "S", "MS")
FILL_METHODS = ("ffill", "interpolate")


@dataclass
class ForecastTable:
    """A validated CSV: values (N, C) in TSLib column order (target last) and their timestamps."""

    values: np.ndarray
    columns: list[str]
    dates: Any  # pandas.DatetimeIndex (N,)
    has_dates: bool


def _is_headerless(path: Path) -> bool:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        first = handle.readline().strip()
    fields = [f.strip() for f in first.split(",")]
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return bool(fields)


def read_forecast_csv(
    path: str | Path,
    *,
    target: str = "OT",
    date: str | None = "date",
    freq: str = "h",
    start_date: str = "2000-01-01",
    columns: list[str] | None = None,
    fill_missing: str | None = None,
) -> ForecastTable:
    """Read and validate a forecasting CSV (plain or ``.gz``).

    Headerless numeric files (``exchange_rate.txt.gz``) get TSLib's column names ``0, 1, ...,
    OT`` (the last column is ``OT``) and a generated timestamp index from ``start_date``
    at ``freq``; so do files with a header but ``date=None``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing date/target columns, non-numeric values, duplicate or decreasing
            timestamps, NaNs without ``fill_missing``, a bad ``fill_missing``.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {str(path)!r} does not exist.")
    if fill_missing is not None and fill_missing not in FILL_METHODS:
        raise ValueError(f"fill_missing={fill_missing!r}; expected None or one of {FILL_METHODS}.")
    headerless = _is_headerless(path)
    frame = pd.read_csv(path, header=None if headerless else "infer")
    if headerless:
        frame.columns = [str(i) for i in range(frame.shape[1] - 1)] + ["OT"]
    frame.columns = [str(c) for c in frame.columns]

    has_dates = not headerless and date is not None
    if has_dates:
        if date not in frame.columns:
            raise ValueError(
                f"date column {date!r} not found in {path.name}; columns are "
                f"{list(frame.columns)}. Pass date='<column>' or date=None to generate timestamps "
                f"from start_date at freq."
            )
        try:
            dates = pd.DatetimeIndex(pd.to_datetime(frame.pop(date)))
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"date column {date!r} of {path.name} does not parse as timestamps ({error})."
            ) from error
        duplicated = dates.duplicated()
        if duplicated.any():
            row = int(np.flatnonzero(duplicated)[0])
            raise ValueError(
                f"{path.name}: duplicate timestamp {dates[row]} at data row {row}; timestamps must "
                "be unique. Aggregate or drop the duplicates first."
            )
        if not dates.is_monotonic_increasing:
            row = int(np.flatnonzero(np.diff(dates.asi8) < 0)[0]) + 1
            raise ValueError(
                f"{path.name}: timestamps are not increasing (row {row}: {dates[row]} comes after "
                f"{dates[row - 1]}). Sort the file by {date!r} first."
            )
    else:
        _, unit = parse_freq(freq)
        dates = pd.date_range(start_date, periods=len(frame), freq=PANDAS_FREQ[unit])

    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"columns {missing} not in {path.name}: {list(frame.columns)}.")
        frame = frame[list(dict.fromkeys([*columns, target] if target in frame else columns))]
    if target not in frame.columns:
        raise ValueError(
            f"target column {target!r} not found in {path.name}; columns are "
            f"{list(frame.columns)}. Pass target='<column>'."
        )
    frame = frame[[c for c in frame.columns if c != target] + [target]]
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise ValueError(
            f"{path.name}: columns {non_numeric} are not numeric; forecasting needs numeric "
            "columns (pass columns=[...] to select some, or date='<column>' if it is the date)."
        )
    frame = frame.astype("float64")
    n_missing = frame.isna().sum()
    if n_missing.any():
        if fill_missing is None:
            bad = {c: int(n) for c, n in n_missing.items() if n}
            raise ValueError(
                f"{path.name} has missing values {bad} (column: count). Pass "
                "fill_missing='ffill' or 'interpolate' to fill them, or clean the file."
            )
        if fill_missing == "interpolate":
            frame = frame.interpolate(method="linear", limit_direction="both")
        frame = frame.ffill().bfill()
    return ForecastTable(frame.to_numpy(np.float64), list(frame.columns), dates, has_dates)


def split_borders(n_rows: int, seq_len: int, split: str) -> tuple[list[int], list[int]]:
    """TSLib's (border1s, border2s) for train, validation and test.

    Raises:
        ValueError: an unknown split, or too few rows for it.
    """
    if split == "ett_hour" or split == "ett_minute":
        scale = 1 if split == "ett_hour" else 4
        month = 30 * 24 * scale
        needed = 20 * month
        if n_rows < needed:
            raise ValueError(
                f"split={split!r} needs at least {needed} rows (12/4/4 months), the file has "
                f"{n_rows}; use split='ratio'."
            )
        border1s = [0, 12 * month - seq_len, 16 * month - seq_len]
        border2s = [12 * month, 16 * month, 20 * month]
    elif split == "ratio":
        num_train, num_test = int(n_rows * 0.7), int(n_rows * 0.2)
        num_val = n_rows - num_train - num_test
        border1s = [0, num_train - seq_len, n_rows - num_test - seq_len]
        border2s = [num_train, num_train + num_val, n_rows]
    else:
        raise ValueError(f"split={split!r}; expected one of {SPLITS[1:]}.")
    return border1s, border2s


def resolve_split(split: str, path: str | Path) -> str:
    """``"auto"`` -> ``"ett_hour"`` for ETTh*, ``"ett_minute"`` for ETTm*, else ``"ratio"``."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}.")
    if split != "auto":
        return split
    name = Path(path).name
    return (
        "ett_hour"
        if name.startswith("ETTh")
        else "ett_minute"
        if name.startswith("ETTm")
        else "ratio"
    )


class ForecastWindows(Dataset):
    """Sliding windows over one split: ``(x, y, x_mark, y_mark)`` like TSLib's datasets.

    Args:
        data_x: (N, C) model inputs (scaled). data_y: (N, C') targets, C' = C or 1.
        marks: (N, F) time features. Returns per item x (seq_len, C), y (label_len + pred_len,
        C'), x_mark (seq_len, F), y_mark (label_len + pred_len, F), all float32.
    """

    def __init__(
        self,
        data_x: np.ndarray,
        data_y: np.ndarray,
        marks: np.ndarray,
        seq_len: int,
        label_len: int,
        pred_len: int,
    ) -> None:
        self.data_x = torch.as_tensor(data_x, dtype=torch.float32)
        self.data_y = torch.as_tensor(data_y, dtype=torch.float32)
        self.marks = torch.as_tensor(marks, dtype=torch.float32)
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len

    def __len__(self) -> int:
        return max(0, len(self.data_x) - self.seq_len - self.pred_len + 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range [0, {len(self)})")
        s_end = i + self.seq_len
        r_begin, r_end = s_end - self.label_len, s_end + self.pred_len
        return (
            self.data_x[i:s_end],
            self.data_y[r_begin:r_end],
            self.marks[i:s_end],
            self.marks[r_begin:r_end],
        )


class CSVForecastDataModule(LightningDataModule):
    """Train/validation/test forecasting windows from a CSV, by Time-Series-Library's rules.

    Reads nothing until :meth:`setup`, so a YAML recipe can be instantiated without the file.

    Args:
        path: CSV (or ``.csv.gz`` / headerless ``.txt.gz``) with a date column and numeric columns.
        target: the target column (``"OT"`` for ETT; the last column of headerless files).
        features: ``"M"`` (all -> all), ``"S"`` (target -> target), ``"MS"`` (all -> target).
        seq_len, label_len, pred_len: lookback, decoder warm-start length, horizon.
        freq: data frequency for the time features (``"h"``, ``"t"``, ``"d"``, ...).
        split: ``"ett_hour"``, ``"ett_minute"``, ``"ratio"`` (0.7/0.1/0.2) or ``"auto"``
            (ETT borders for files named ETTh*/ETTm*, else ratio).
        scale: standardise with mean/std of the training rows.
        timeenc: ``"timeF"`` (TSLib's scaled calendar features) or ``"none"``.
        date: name of the date column, or None to generate timestamps from ``start_date``.
        start_date: first generated timestamp for files without dates.
        columns: optional subset of feature columns (the target is always kept, last).
        fill_missing: None (NaNs are an error), ``"ffill"`` or ``"interpolate"``.
        batch_size, eval_batch_size, num_workers: loader settings (eval defaults to batch_size).
    """

    def __init__(
        self,
        path: str,
        target: str = "OT",
        features: str = "M",
        seq_len: int = 96,
        label_len: int = 48,
        pred_len: int = 96,
        freq: str = "h",
        split: str = "auto",
        scale: bool = True,
        timeenc: str = "timeF",
        date: str | None = "date",
        start_date: str = "2000-01-01",
        columns: list[str] | None = None,
        fill_missing: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features={features!r}; expected one of {FEATURES}.")
        if timeenc not in ("timeF", "none"):
            raise ValueError(f"timeenc={timeenc!r}; expected 'timeF' or 'none'.")
        for name, value in (
            ("seq_len", seq_len),
            ("pred_len", pred_len),
            ("batch_size", batch_size),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if not 0 <= label_len <= seq_len:
            raise ValueError(f"label_len must be in [0, seq_len={seq_len}], got {label_len}.")
        parse_freq(freq)
        resolve_split(split, path)
        if fill_missing is not None and fill_missing not in FILL_METHODS:
            raise ValueError(
                f"fill_missing={fill_missing!r}; expected None or one of {FILL_METHODS}."
            )
        self.save_hyperparameters()
        self.path, self.target, self.features = path, target, features
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.freq, self.split, self.scale, self.timeenc = freq, split, scale, timeenc
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self.table: ForecastTable | None = None
        self.datasets: dict[str, ForecastWindows] = {}

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> ForecastTable:
        """Read and validate the CSV (once) and fit the scaler on the training rows."""
        if self.table is not None:
            return self.table
        hp = self.hparams
        table = read_forecast_csv(
            self.path,
            target=self.target,
            date=hp.date,
            freq=self.freq,
            start_date=hp.start_date,
            columns=hp.columns,
            fill_missing=hp.fill_missing,
        )
        n_rows = len(table.values)
        minimum = self.seq_len + self.pred_len
        split = resolve_split(self.split, self.path)
        border1s, border2s = split_borders(n_rows, self.seq_len, split)
        for name, b1, b2 in zip(("train", "val", "test"), border1s, border2s):
            if b1 < 0 or b2 - b1 < minimum:
                raise ValueError(
                    f"{Path(self.path).name} has {n_rows} rows: the {name} split [{b1}, {b2}) is too "
                    f"short for one window of seq_len + pred_len = {minimum} rows. Use a shorter "
                    f"seq_len/pred_len or a longer file (about {int(np.ceil(minimum / 0.2)) + self.seq_len} "
                    "rows for the 0.7/0.1/0.2 split)."
                )
        self.border1s, self.border2s = border1s, border2s
        data = table.values if self.features != "S" else table.values[:, -1:]
        train = data[border1s[0] : border2s[0]]
        if self.scale:
            mean, std = train.mean(0), train.std(0)
            std = np.where(std > 0, std, 1.0)  # constant columns: like sklearn, scale 1
        else:
            mean, std = np.zeros(data.shape[1]), np.ones(data.shape[1])
        self.mean, self.std = mean, std
        self.data = (data - mean) / std
        if self.timeenc == "timeF":
            self.marks = time_features(table.dates, self.freq)
        else:
            self.marks = np.zeros((n_rows, 0), dtype=np.float32)
        self.table = table
        return table

    @property
    def n_features(self) -> int:
        """Model input channels (``enc_in``): all columns for M/MS, 1 for S."""
        self.load()
        return self.data.shape[1]

    @property
    def n_targets(self) -> int:
        """Forecast channels (``c_out``): all columns for M, 1 for S/MS."""
        return 1 if self.features in ("S", "MS") else self.n_features

    @property
    def n_time_features(self) -> int:
        self.load()
        return self.marks.shape[1]

    @property
    def target_names(self) -> list[str]:
        table = self.load()
        return table.columns if self.features == "M" else [self.target]

    @property
    def target_mean(self) -> np.ndarray:
        self.load()
        return self.mean[-self.n_targets :]

    @property
    def target_std(self) -> np.ndarray:
        self.load()
        return self.std[-self.n_targets :]

    def inverse_transform(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Scaled target values (..., c_out) back to original units."""
        mean, std = self.target_mean, self.target_std
        if isinstance(values, torch.Tensor):
            mean = torch.as_tensor(mean, dtype=values.dtype, device=values.device)
            std = torch.as_tensor(std, dtype=values.dtype, device=values.device)
        return values * std + mean

    def windows(self, stage: str) -> ForecastWindows:
        """The :class:`ForecastWindows` of ``"train"``, ``"val"`` or ``"test"``."""
        if stage not in self.datasets:
            self.load()
            index = {"train": 0, "val": 1, "test": 2}[stage]
            b1, b2 = self.border1s[index], self.border2s[index]
            data_y = self.data if self.features != "MS" else self.data[:, -1:]
            self.datasets[stage] = ForecastWindows(
                self.data[b1:b2],
                data_y[b1:b2],
                self.marks[b1:b2],
                self.seq_len,
                self.label_len,
                self.pred_len,
            )
        return self.datasets[stage]

    def future_inputs(self) -> dict[str, Any]:
        """The last ``seq_len`` rows of the file and the ``pred_len`` timestamps after them.

        Returns:
            dict with x (1, seq_len, C), x_mark (1, seq_len, F), y_mark (1, label_len +
            pred_len, F), history_dates, future_dates, history (seq_len, c_out) in original units.
        """
        import pandas as pd

        table = self.load()
        dates = table.dates
        inferred = pd.infer_freq(dates[-min(len(dates), 50) :]) if len(dates) >= 3 else None
        multiple, unit = parse_freq(self.freq)
        offset = inferred or f"{multiple}{PANDAS_FREQ[unit]}"
        future = pd.date_range(dates[-1], periods=self.pred_len + 1, freq=offset)[1:]
        marks_future = (
            time_features(future, self.freq)
            if self.timeenc == "timeF"
            else np.zeros((self.pred_len, 0), np.float32)
        )
        x = self.data[-self.seq_len :]
        marks = self.marks[-self.seq_len :]
        y_mark = np.concatenate([self.marks[len(self.marks) - self.label_len :], marks_future])
        raw = table.values if self.features == "M" else table.values[:, -1:]
        return {
            "x": torch.as_tensor(x, dtype=torch.float32)[None],
            "x_mark": torch.as_tensor(marks, dtype=torch.float32)[None],
            "y_mark": torch.as_tensor(y_mark, dtype=torch.float32)[None],
            "history_dates": dates[-self.seq_len :],
            "future_dates": future,
            "history": raw[-self.seq_len :],
        }

    # -- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            self.windows(split)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.windows("train"),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=False,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.windows("val"), batch_size=self.eval_batch_size, num_workers=self.num_workers
        )

    def test_dataloader(self) -> DataLoader:
        # drop_last=False: every test window counts (TSLib's old True silently dropped some).
        return DataLoader(
            self.windows("test"),
            batch_size=self.eval_batch_size,
            shuffle=False,
            drop_last=False,
            num_workers=self.num_workers,
        )

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
