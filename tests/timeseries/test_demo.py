"""The demo's data: statsmodels' real US macro series, read by the TSLib-rules data module."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("statsmodels")
pytest.importorskip("lightning")

from ssmkit.timeseries.data import CSVForecastDataModule
from ssmkit.timeseries.demo import HORIZON, SEQ_LEN, TARGET, macrodata_csv


def test_macrodata_csv_is_quarterly_and_windows_fit(tmp_path: Path) -> None:
    csv = macrodata_csv(tmp_path / "macro.csv")
    data = CSVForecastDataModule(
        str(csv), target=TARGET, seq_len=SEQ_LEN, label_len=8, pred_len=HORIZON, freq="q",
        split="ratio",
    )  # fmt: skip
    data.setup()
    table = data.table
    assert len(table.values) == 203 and data.n_features == 12
    assert table.columns[-1] == TARGET
    assert (
        str(table.dates[0].date()) == "1959-01-01" and str(table.dates[-1].date()) == "2009-07-01"
    )
    assert len(data.windows("test")) == 40 - HORIZON + 1  # int(0.2 * 203) = 40 test quarters
    assert data.n_time_features == 1  # month of year
