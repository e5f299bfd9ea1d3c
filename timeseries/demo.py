"""``ssmkit demo``: S-Mamba vs DLinear on real data that ships with statsmodels (no download).

The data: ``statsmodels.datasets.macrodata``, US quarterly macroeconomic series 1959Q1-2009Q3
(203 quarters, 12 numeric series: real GDP, consumption, investment, government spending,
disposable income, CPI, M1, T-bill rate, unemployment, population, inflation, real interest
rate; source: US Federal Reserve / BLS / BEA via statsmodels). Lookback 16 quarters, horizon 8,
all series -> all series, split 0.7/0.1/0.2 in time, scaler fit on the training quarters.
"""

from __future__ import annotations

from pathlib import Path

from ssmkit.core.files import atomic_output
from ssmkit.core.optional import require

SEQ_LEN, HORIZON = 16, 8
TARGET = "realgdp"
DEMO_MODELS = {
    "smamba": dict(
        model_kwargs=dict(d_model=64, d_ff=64, e_layers=2, d_state=8, dropout=0.1),
        learning_rate=1e-3,
    ),
    "dlinear": dict(model_kwargs=dict(moving_avg=5), learning_rate=5e-3),
}


def macrodata_csv(path: Path) -> Path:
    """Write statsmodels' macrodata as ``date,<12 series>`` (quarter starts) to ``path``."""
    require("statsmodels", "timeseries")
    import pandas as pd
    from statsmodels.datasets import macrodata

    frame = macrodata.load_pandas().data
    quarters = pd.PeriodIndex.from_fields(
        year=frame.pop("year").astype(int), quarter=frame.pop("quarter").astype(int), freq="Q"
    )
    frame.insert(0, "date", quarters.to_timestamp())
    frame = frame[["date", *[c for c in frame.columns if c not in ("date", TARGET)], TARGET]]
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def run_demo(out_dir: Path, epochs: int = 20) -> dict[str, dict[str, float]]:
    """Train both models, print a comparison, write ``out_dir/demo_forecast.png``."""
    import logging
    import warnings

    import torch

    from ssmkit.timeseries.cli import fit_forecaster, plot_forecast
    from ssmkit.timeseries.data import CSVForecastDataModule
    from ssmkit.timeseries.task import ForecastTask

    # The models are tiny: one thread avoids OpenMP overhead (and spinning on a busy machine).
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    out_dir = Path(out_dir)
    csv = macrodata_csv(out_dir / "macrodata.csv")
    print(f"data: statsmodels macrodata (US quarterly, 1959-2009) -> {csv}")
    common = dict(
        target=TARGET,
        horizon=HORIZON,
        seq_len=SEQ_LEN,
        label_len=SEQ_LEN // 2,
        freq="q",
        split="ratio",
        epochs=epochs,
        batch_size=16,
        lr_decay=0.95,
        patience=5,
        progress=False,
    )
    results, forecasts = {}, {}
    data = CSVForecastDataModule(
        str(csv),
        target=TARGET,
        seq_len=SEQ_LEN,
        label_len=SEQ_LEN // 2,
        pred_len=HORIZON,
        freq="q",
        split="ratio",
    )
    x, y, x_mark, _ = data.windows("test")[len(data.windows("test")) - 1]
    for name, settings in DEMO_MODELS.items():
        print(f"training {name} ...", flush=True)
        results[name] = fit_forecaster(
            str(csv), model=name, out_dir=out_dir / name, **common, **settings
        )
        task = ForecastTask.load_from_checkpoint(out_dir / name / "model.ckpt", map_location="cpu")
        with torch.no_grad():
            forecasts[name] = task.eval().inverse_transform(task(x[None], x_mark[None]))[0].numpy()
    print(
        f"\ntest set, {len(data.windows('test'))} windows x {HORIZON} quarters x "
        f"{data.n_features} series (MSE/MAE on standardised data, MAE in original units):"
    )
    print(f"{'model':<10}{'MSE':>8}{'MAE':>8}{'MAE orig':>11}{'train s':>9}")
    for name, m in results.items():
        print(
            f"{name:<10}{m['mse']:8.3f}{m['mae']:8.3f}{m['mae_orig']:11.2f}{m['train_seconds']:9.1f}"
        )
    table = data.table
    end = len(table.values)
    dates = table.dates
    plot = plot_forecast(
        dates[end - HORIZON - SEQ_LEN : end - HORIZON],
        table.values[end - HORIZON - SEQ_LEN : end - HORIZON],
        dates[end - HORIZON :],
        forecasts,
        table.columns,
        out_dir / "demo_forecast.png",
        truth=table.values[end - HORIZON :],
    )
    print(f"forecast plot (last test window): {plot}")
    return results
