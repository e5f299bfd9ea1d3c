"""``SegmentationTask``: Lightning training of a segmentation network with MONAI loss and metric.

Needs the ``bio`` and ``train`` extras; the domain ``__init__`` imports this module on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ssmkit.core.optional import require
from ssmkit.core.registry import create_model

lightning = require("lightning", "train")
require("monai", "bio")

_OPTIMIZERS = ("adamw", "sgd")


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (metadata is not needed past the transforms)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class SegmentationTask(lightning.LightningModule):
    """Train, validate and predict a segmentation network (U-Mamba, SegMamba, or any MONAI net).

    Loss DiceCE (one-hot labels, softmax), validation Dice (``DiceMetric``, background excluded)
    on whole volumes with ``sliding_window_inference``; prediction returns the argmax label map.
    Mixed precision comes from the Trainer (``precision="bf16-mixed"``); the SSM layers of the
    ssmkit networks run in fp32 inside autocast, so bf16 training does not produce NaN (the reason
    U-Mamba ships a no-AMP trainer).

    Args:
        model: a registry name (``"bio.umamba_bot"``) or an ``nn.Module``; a module is not saved in
            the hyper-parameters, so pass it again to ``load_from_checkpoint``.
        model_kwargs: constructor arguments for a registry name (``spatial_dims``, ``in_channels``,
            ``out_channels``, ...).
        roi_size: sliding-window patch size (a multiple of the network's stride).
        sw_batch_size: windows per forward in sliding-window inference.
        overlap: sliding-window overlap in [0, 1).
        optimizer: "adamw" or "sgd" (nnU-Net: SGD, momentum 0.99, nesterov, lr 1e-2).
        lr: peak learning rate, decayed polynomially (power 0.9) over the training steps.
        weight_decay: weight decay.
        intensity_range: the data module's ``intensity_range``; stored so that ``ssmkit segment``
            normalises new images the same way (None = per-channel z-score over non-zero voxels).
        axcodes: the data module's orientation, likewise reused by ``ssmkit segment``.
    """

    def __init__(
        self,
        model: str | nn.Module = "bio.umamba_bot",
        model_kwargs: dict[str, Any] | None = None,
        roi_size: Sequence[int] = (96, 96, 96),
        sw_batch_size: int = 2,
        overlap: float = 0.25,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 3e-5,
        intensity_range: tuple[float, float] | None = None,
        axcodes: str | None = "RAS",
    ) -> None:
        super().__init__()
        from monai.losses import DiceCELoss
        from monai.metrics import DiceMetric

        if isinstance(model, str):
            self.save_hyperparameters()
            self.net = create_model(model, **(model_kwargs or {}))
        elif isinstance(model, nn.Module):
            if model_kwargs:
                raise ValueError("model_kwargs applies to a registry name, not to an nn.Module.")
            self.save_hyperparameters(ignore=["model"])
            self.net = model
        else:
            raise TypeError(
                f"model must be a registry name such as 'bio.umamba_bot' or an nn.Module, got "
                f"{type(model).__name__}."
            )
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}.")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must lie in [0, 1), got {overlap}.")
        self.spatial_dims = int(getattr(self.net, "spatial_dims", len(roi_size)))
        self.roi_size = tuple(int(r) for r in roi_size)
        if len(self.roi_size) != self.spatial_dims:
            raise ValueError(
                f"roi_size {self.roi_size} needs {self.spatial_dims} entries for a "
                f"{self.spatial_dims}-D network."
            )
        divisor = getattr(self.net, "divisor", 1)
        if any(r % divisor for r in self.roi_size):
            raise ValueError(
                f"roi_size {self.roi_size} must be a multiple of the network's stride {divisor} "
                "along every axis; sliding windows of that size are fed to the network."
            )
        self.num_classes = int(getattr(self.net, "out_channels", 0)) or None
        self.in_channels = int(getattr(self.net, "in_channels", 0)) or None
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.dice = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, *S) -> logits (B, num_classes, *S)."""
        return self.net(x)

    def _classes(self, logits: torch.Tensor) -> int:
        return self.num_classes or logits.shape[1]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss_fn(logits.float(), batch["label"])
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def sliding_window(self, image: torch.Tensor) -> torch.Tensor:
        """Logits for a whole (B, C, *S) image of any size by overlapping ``roi_size`` windows."""
        from monai.inferers import sliding_window_inference

        logits = sliding_window_inference(
            _plain(image),
            self.roi_size,
            self.hparams.sw_batch_size,
            self.net,
            overlap=self.hparams.overlap,
        )
        return _plain(logits)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        from monai.data import decollate_batch
        from monai.transforms import AsDiscrete

        logits = self.sliding_window(batch["image"]).float()
        label = _plain(batch["label"])
        self.log("val_loss", self.loss_fn(logits, label), batch_size=label.shape[0])
        classes = self._classes(logits)
        to_pred, to_label = (
            AsDiscrete(argmax=True, to_onehot=classes),
            AsDiscrete(to_onehot=classes),
        )
        preds = [to_pred(p) for p in decollate_batch(logits)]
        labels = [to_label(t) for t in decollate_batch(label)]
        self.dice(y_pred=preds, y=labels)

    def on_validation_epoch_end(self) -> None:
        dice = self.dice.aggregate().item()
        self.dice.reset()
        self.log("val_dice", dice, prog_bar=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Label map (B, 1, *S) (int64) for whole images."""
        return self.sliding_window(batch["image"]).argmax(dim=1, keepdim=True)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.hparams.optimizer == "sgd":
            opt = torch.optim.SGD(
                params,
                lr=self.hparams.lr,
                momentum=0.99,
                nesterov=True,
                weight_decay=self.hparams.weight_decay,
            )
        else:
            opt = torch.optim.AdamW(
                params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
            )
        total = float(self.trainer.estimated_stepping_batches) if self._trainer else math.inf
        if not math.isfinite(total):  # no step budget known: keep the rate constant
            return opt
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: max(0.0, 1.0 - step / max(total, 1.0)) ** 0.9
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
