"""``ssmkit forecast train|predict`` and ``ssmkit demo``.

ssmkit forecast train --csv data.csv --target OT --horizon 96 [--model smamba] [--features M]
                      [--seq-len 96] [--epochs 10] [--out-dir runs/forecast]
ssmkit forecast predict --checkpoint runs/forecast/model.ckpt --csv data.csv [--out FILE.csv]
ssmkit demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ssmkit.core.files import atomic_output, save_figure_atomic, write_text_atomic
from ssmkit.core.optional import require

MODELS = ("smamba", "spacetime", "dlinear")
# Per-model training defaults (the papers' ETTh1 learning rates, rounded for general use).
LEARNING_RATES = {"smamba": 1e-4, "spacetime": 1e-3, "dlinear": 5e-3}


def fit_forecaster(
    csv: str,
    *,
    model: str = "smamba",
    target: str = "OT",
    horizon: int = 96,
    features: str = "M",
    seq_len: int = 96,
    label_len: int = 48,
    freq: str = "h",
    split: str = "auto",
    date: str | None = "date",
    fill_missing: str | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    eval_batch_size: int = 256,
    learning_rate: float | None = None,
    lr_decay: float = 0.5,
    weight_decay: float = 0.0,
    patience: int = 3,
    model_kwargs: dict[str, Any] | None = None,
    limit_train_batches: int | float = 1.0,
    out_dir: str | Path = "runs/forecast",
    seed: int = 2021,
    progress: bool = True,
) -> dict[str, float]:
    """Train on a CSV with early stopping, test the best checkpoint, save it and metrics.json.

    Writes ``out_dir/model.ckpt`` (atomically) and ``out_dir/metrics.json``.

    Returns:
        test metrics: ``mse``, ``mae`` (scaled, TSLib-comparable), ``rmse``, ``mse_orig``,
        ``mae_orig`` (original units), ``train_seconds``, ``epochs``.
    """
    require("lightning", "train")
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from ssmkit.timeseries.data import CSVForecastDataModule
    from ssmkit.timeseries.task import ForecastTask

    if model not in MODELS:
        raise ValueError(f"model={model!r}; expected one of {MODELS}.")
    pl.seed_everything(seed, verbose=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = CSVForecastDataModule(
        csv,
        target=target,
        features=features,
        seq_len=seq_len,
        label_len=label_len,
        pred_len=horizon,
        freq=freq,
        split=split,
        date=date,
        fill_missing=fill_missing,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )
    task = ForecastTask(
        model=f"timeseries.{model}",
        model_kwargs=model_kwargs,
        seq_len=seq_len,
        pred_len=horizon,
        enc_in=data.n_features,
        features=features,
        learning_rate=learning_rate or LEARNING_RATES[model],
        weight_decay=weight_decay,
        lr_decay=lr_decay,
    )
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        best = ModelCheckpoint(dirpath=scratch, monitor="val_loss", save_top_k=1)
        trainer = pl.Trainer(
            max_epochs=epochs,
            callbacks=[EarlyStopping("val_loss", patience=patience), best],
            logger=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            limit_train_batches=limit_train_batches,
            default_root_dir=scratch,
        )
        start = time.perf_counter()
        trainer.fit(task, datamodule=data)
        seconds = time.perf_counter() - start
        results = trainer.test(task, datamodule=data, ckpt_path="best", verbose=False)[0]
        with atomic_output(out / "model.ckpt") as staging:
            shutil.copyfile(best.best_model_path, staging)
    metrics = {k.removeprefix("test_"): float(v) for k, v in results.items()}
    metrics.update(train_seconds=round(seconds, 2), epochs=trainer.current_epoch)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def predict_future(
    checkpoint: str | Path, csv: str | Path, out: str | Path, plot: str | Path | None = None
) -> Path:
    """Forecast the ``pred_len`` steps after the end of ``csv`` with a trained checkpoint.

    Writes a CSV (``date`` + one column per forecast channel, original units) and, if ``plot``
    is given, a PNG of the history and the forecast.
    """
    import pandas as pd
    import torch

    from ssmkit.timeseries.data import CSVForecastDataModule
    from ssmkit.timeseries.task import ForecastTask

    checkpoint, csv, out = Path(checkpoint), Path(csv), Path(out)
    if out.resolve() == csv.resolve():
        raise ValueError(f"--out {str(out)!r} is the input CSV; choose another output file.")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist.")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    data_args = dict(state.get("datamodule_hyper_parameters") or {})
    if not data_args:
        raise ValueError(
            f"{checkpoint} has no data-module settings; train it with `ssmkit forecast train`."
        )
    data_args["path"] = str(csv)
    data = CSVForecastDataModule(**data_args)
    task = ForecastTask.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    inputs = data.future_inputs()
    with torch.no_grad():
        forecast = task.inverse_transform(task(inputs["x"], inputs["x_mark"]))[0].numpy()
    frame = pd.DataFrame(forecast, columns=data.target_names)
    frame.insert(0, "date", inputs["future_dates"])
    with atomic_output(out) as staging:
        frame.to_csv(staging, index=False)
    if plot is not None:
        plot_forecast(
            inputs["history_dates"],
            inputs["history"],
            inputs["future_dates"],
            {"forecast": forecast},
            data.target_names,
            plot,
        )
    return out


def plot_forecast(
    history_dates: Any,
    history: Any,
    future_dates: Any,
    forecasts: dict[str, Any],
    names: list[str],
    path: str | Path,
    truth: Any | None = None,
    max_panels: int = 4,
) -> Path:
    """PNG of history (L, C), forecasts {label: (H, C)} and ``truth`` (H, C) if given; one panel
    per channel, last channels first (the target is last)."""
    require("matplotlib", "timeseries")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = list(range(len(names)))[::-1][:max_panels]
    fig, axes = plt.subplots(len(channels), 1, figsize=(9, 2.4 * len(channels)), squeeze=False)
    for ax, c in zip(axes[:, 0], channels):
        ax.plot(history_dates, history[:, c], color="0.3", label="history")
        if truth is not None:
            ax.plot(future_dates, truth[:, c], color="tab:green", label="truth")
        for label, forecast in forecasts.items():
            ax.plot(future_dates, forecast[:, c], label=label)
        ax.set_ylabel(names[c])
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=110)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssmkit forecast", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train on a CSV; prints one JSON line of test metrics")
    train.add_argument("--csv", required=True, help="CSV with a date column and numeric columns")
    train.add_argument("--target", default="OT", help="target column (default OT)")
    train.add_argument("--horizon", type=int, default=96, help="forecast length (pred_len)")
    train.add_argument("--model", choices=MODELS, default="smamba")
    train.add_argument("--features", choices=("M", "S", "MS"), default="M")
    train.add_argument("--seq-len", type=int, default=96, help="lookback length")
    train.add_argument("--label-len", type=int, default=48)
    train.add_argument("--freq", default="h", help="data frequency: h, t, d, w, m, ...")
    train.add_argument(
        "--split", default="auto", choices=("auto", "ett_hour", "ett_minute", "ratio")
    )
    train.add_argument("--date", default="date", help="date column ('none': generate dates)")
    train.add_argument("--fill-missing", choices=("ffill", "interpolate"), default=None)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=None, help="learning rate (per-model default)")
    train.add_argument("--patience", type=int, default=3, help="early-stopping patience (epochs)")
    train.add_argument(
        "--model-kwargs", default=None, help='JSON, e.g. \'{"d_model": 128, "e_layers": 2}\''
    )
    train.add_argument("--limit-train-batches", type=float, default=1.0)
    train.add_argument("--out-dir", default="runs/forecast")
    train.add_argument("--seed", type=int, default=2021)
    train.add_argument("--no-progress", action="store_true")
    predict = sub.add_parser("predict", help="forecast past the end of a CSV")
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("--csv", required=True)
    predict.add_argument(
        "--out", default=None, help="output CSV (default: <checkpoint dir>/forecast.csv)"
    )
    predict.add_argument("--plot", default=None, help="output PNG (default: next to --out)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        limit = args.limit_train_batches
        metrics = fit_forecaster(
            args.csv,
            model=args.model,
            target=args.target,
            horizon=args.horizon,
            features=args.features,
            seq_len=args.seq_len,
            label_len=min(args.label_len, args.seq_len),
            freq=args.freq,
            split=args.split,
            date=None if args.date.lower() == "none" else args.date,
            fill_missing=args.fill_missing,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            patience=args.patience,
            model_kwargs=json.loads(args.model_kwargs) if args.model_kwargs else None,
            limit_train_batches=int(limit) if limit > 1 else limit,
            out_dir=args.out_dir,
            seed=args.seed,
            progress=not args.no_progress,
        )
        print(f"checkpoint: {Path(args.out_dir) / 'model.ckpt'}")
        print(json.dumps(metrics))
        return 0
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "forecast.csv"
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    predict_future(args.checkpoint, args.csv, out, plot)
    print(f"forecast: {out}\nplot: {plot}")
    return 0


def demo(argv: list[str] | None = None) -> int:
    """S-Mamba vs DLinear on real US quarterly macro data shipped with statsmodels."""
    from ssmkit.timeseries.demo import run_demo

    parser = argparse.ArgumentParser(prog="ssmkit demo", description=demo.__doc__)
    parser.add_argument("--out-dir", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    run_demo(Path(args.out_dir), epochs=args.epochs)
    return 0
