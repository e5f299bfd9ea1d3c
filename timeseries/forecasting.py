"""S-Mamba and SpaceTime as pytorch-forecasting models (``BaseModel`` subclasses).

For ``TimeSeriesDataSet`` users: ``SMambaForecaster.from_dataset(train_ds, ...)``, a Lightning
``Trainer().fit(model, train_dl, val_dl)``, then ``model.predict(dl)`` and
``model.plot_prediction(...)`` as with any pytorch-forecasting model. Every real-valued
variable of the data set (``dataset.reals``, targets included) becomes one input channel over a
fixed encoder window; the forecasts of the target channels are returned, transformed back by the
data set's target normaliser. One or several targets (``MultiLoss``).
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_forecasting import TimeSeriesDataSet
from pytorch_forecasting.metrics import MAE, RMSE, SMAPE, MultiLoss
from pytorch_forecasting.models.base_model import BaseModel
from torch import nn

from ssmkit.core.registry import create_model


class _SSMForecaster(BaseModel):
    """A registered ``(B, L, C) -> (B, H, C)`` forecaster wrapped for pytorch-forecasting."""

    registry_name = ""

    def __init__(
        self,
        n_reals: int = 1,
        encoder_length: int = 96,
        horizon: int = 24,
        target_positions: list[int] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        loss: Any = None,
        logging_metrics: nn.ModuleList | None = None,
        **kwargs: Any,
    ) -> None:
        positions = list(target_positions or [0])
        if loss is None:
            loss = MAE() if len(positions) == 1 else MultiLoss([MAE() for _ in positions])
        if logging_metrics is None:
            logging_metrics = nn.ModuleList([SMAPE(), MAE(), RMSE()])
        self.save_hyperparameters(ignore=["loss", "logging_metrics"])
        super().__init__(loss=loss, logging_metrics=logging_metrics, **kwargs)
        if max(positions) >= n_reals:
            raise ValueError(f"target_positions {positions} must index the {n_reals} reals.")
        self.network = create_model(
            self.registry_name,
            seq_len=encoder_length,
            pred_len=horizon,
            enc_in=n_reals,
            **(model_kwargs or {}),
        )
        self.target_positions = positions

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, Any]:
        """x["encoder_cont"] (B, L, n_reals) -> prediction (B, H, 1), or a list per target."""
        encoder = x["encoder_cont"]
        if encoder.shape[1] != self.hparams.encoder_length:
            raise ValueError(
                f"{type(self).__name__} needs encoders of exactly {self.hparams.encoder_length} "
                f"steps, got {encoder.shape[1]}; build the TimeSeriesDataSet with "
                "min_encoder_length == max_encoder_length."
            )
        out = self.network(encoder)  # (B, H, n_reals)
        per_target = [out[..., p : p + 1] for p in self.target_positions]
        prediction = per_target[0] if len(per_target) == 1 else per_target
        prediction = self.transform_output(prediction, target_scale=x["target_scale"])
        return self.to_network_output(prediction=prediction)

    @classmethod
    def from_dataset(cls, dataset: TimeSeriesDataSet, **kwargs: Any) -> _SSMForecaster:
        """Build from a ``TimeSeriesDataSet`` with a fixed encoder length.

        Raises:
            ValueError: the data set allows variable encoder lengths.
        """
        if dataset.min_encoder_length != dataset.max_encoder_length:
            raise ValueError(
                f"{cls.__name__} needs a fixed lookback: the data set has min_encoder_length="
                f"{dataset.min_encoder_length} != max_encoder_length={dataset.max_encoder_length}."
            )
        reals = list(dataset.reals)
        missing = [t for t in dataset.target_names if t not in reals]
        if missing:
            raise ValueError(
                f"targets {missing} are not among the data set's reals {reals}; list them in "
                "time_varying_unknown_reals."
            )
        settings = dict(
            n_reals=len(reals),
            encoder_length=dataset.max_encoder_length,
            horizon=dataset.max_prediction_length,
            target_positions=[reals.index(t) for t in dataset.target_names],
        )
        settings.update(kwargs)
        return super().from_dataset(dataset, **settings)


class SMambaForecaster(_SSMForecaster):
    """S-Mamba (Wang et al. 2024, arXiv 2403.11144) for ``TimeSeriesDataSet``.

    Args:
        n_reals, encoder_length, horizon, target_positions: set by :meth:`from_dataset`.
        model_kwargs: S-Mamba settings (``d_model``, ``d_ff``, ``e_layers``, ``d_state``, ...).
        loss: defaults to MAE (``MultiLoss`` of MAEs for several targets).
        **kwargs: ``BaseModel`` arguments (``learning_rate``, ``optimizer``, ...).
    """

    registry_name = "timeseries.smamba"


class SpaceTimeForecaster(_SSMForecaster):
    """SpaceTime (Zhang et al. 2023, arXiv 2303.09489) for ``TimeSeriesDataSet``.

    Same arguments as :class:`SMambaForecaster`; ``model_kwargs`` go to ``SpaceTime``. Its
    auxiliary (lag and next-input) losses are not used here: pytorch-forecasting trains on the
    forecast loss only.
    """

    registry_name = "timeseries.spacetime"
