"""``ForecastTask``: any registered forecaster trained with MSE as a LightningModule."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from ssmkit.core.registry import create_model

FEATURES = ("M", "S", "MS")


class ForecastTask(LightningModule):
    """Long-horizon forecasting with Time-Series-Library's training and metrics.

    Training minimises MSE on the scaled horizon (plus a model's ``auxiliary_loss`` if it sets
    one). Test metrics are TSLib-comparable: ``test_mse``, ``test_mae`` (and ``test_rmse``) over
    windows x horizon x channels on scaled data, plus ``test_mae_orig`` / ``test_mse_orig`` in the
    original units. ``predict_step`` returns forecasts in original units.

    Args:
        model: registry name (``"timeseries.smamba"``, ``"timeseries.spacetime"``,
            ``"timeseries.dlinear"``).
        model_kwargs: extra constructor arguments of the model (d_model, e_layers, ...).
        seq_len, pred_len: lookback and horizon (must match the data module).
        enc_in: input channels (7 for ETT with features M/MS, 1 for S).
        features: ``"M"``, ``"S"`` or ``"MS"`` (MS forecasts the last channel only).
        learning_rate: Adam learning rate. weight_decay: Adam weight decay.
        lr_decay: the learning rate is multiplied by this after every epoch (TSLib's "type1"
            halves it: 0.5; 1.0 keeps it constant).
    """

    def __init__(
        self,
        model: str = "timeseries.smamba",
        model_kwargs: dict[str, Any] | None = None,
        seq_len: int = 96,
        pred_len: int = 96,
        enc_in: int = 7,
        features: str = "M",
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        lr_decay: float = 0.5,
    ) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features={features!r}; expected one of {FEATURES}.")
        if features == "S" and enc_in != 1:
            raise ValueError(f"features='S' forecasts one series: enc_in must be 1, got {enc_in}.")
        if not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}.")
        self.save_hyperparameters()
        self.model = create_model(
            model, seq_len=seq_len, pred_len=pred_len, enc_in=enc_in, **(model_kwargs or {})
        )
        self.features, self.pred_len = features, pred_len
        c_out = 1 if features in ("S", "MS") else enc_in
        # The scaler of the target channels travels with the checkpoint (predictions in original
        # units without the training CSV); filled from the data module in setup().
        self.register_buffer("target_mean", torch.zeros(c_out))
        self.register_buffer("target_std", torch.ones(c_out))
        self._sums: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "target_mean"):
            mean = torch.as_tensor(datamodule.target_mean, dtype=torch.float32)
            if mean.numel() != self.target_mean.numel():
                raise ValueError(
                    f"the data module forecasts {mean.numel()} channels but the task was built for "
                    f"{self.target_mean.numel()} (enc_in={self.hparams.enc_in}, "
                    f"features={self.features!r}); set model enc_in to the data's channel count."
                )
            self.target_mean.copy_(mean)
            self.target_std.copy_(torch.as_tensor(datamodule.target_std, dtype=torch.float32))

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, C), x_mark (B, L, K) -> scaled forecast (B, H, c_out)."""
        out = self.model(x, x_mark)
        return out[..., -1:] if self.features == "MS" else out

    def _step(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, x_mark, _ = batch
        pred = self(x, x_mark)
        return pred, y[:, -self.pred_len :]

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        pred, target = self._step(batch)
        loss = F.mse_loss(pred, target)
        self.log("train_mse", loss, prog_bar=True)
        aux = getattr(self.model, "auxiliary_loss", None)
        if aux is not None:
            self.log("train_aux", aux)
            loss = loss + aux
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        pred, target = self._step(batch)
        self.log("val_loss", F.mse_loss(pred, target), prog_bar=True, batch_size=len(pred))
        self.log("val_mae", F.l1_loss(pred, target), batch_size=len(pred))

    def on_test_epoch_start(self) -> None:
        self._sums = dict.fromkeys(("se", "ae", "se_orig", "ae_orig", "n"), 0.0)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        # Sums over every window, step and channel: the mean equals TSLib's metric whatever the
        # batch size (and the last, partial batch is counted).
        pred, target = self._step(batch)
        err = (pred - target).double()
        err_orig = err * self.target_std.double()
        sums = self._sums
        sums["se"] += float(err.pow(2).sum())
        sums["ae"] += float(err.abs().sum())
        sums["se_orig"] += float(err_orig.pow(2).sum())
        sums["ae_orig"] += float(err_orig.abs().sum())
        sums["n"] += err.numel()

    def on_test_epoch_end(self) -> None:
        n = max(self._sums["n"], 1.0)
        mse = self._sums["se"] / n
        self.log_dict(
            {
                "test_mse": mse,
                "test_mae": self._sums["ae"] / n,
                "test_rmse": mse**0.5,
                "test_mse_orig": self._sums["se_orig"] / n,
                "test_mae_orig": self._sums["ae_orig"] / n,
            }
        )

    def inverse_transform(self, values: torch.Tensor) -> torch.Tensor:
        """Scaled forecasts (..., c_out) -> original units."""
        return values * self.target_std + self.target_mean

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Forecasts (B, H, c_out) in original units."""
        x, _, x_mark, _ = batch
        return self.inverse_transform(self(x, x_mark))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.learning_rate,
            weight_decay=self.hparams.weight_decay,
        )
        decay = self.hparams.lr_decay
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: decay**epoch)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
