"""Lightning training task for speech separation (PIT negative SI-SNR)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from ssmkit.audio.metrics import pit_si_snr, si_snr_improvement
from ssmkit.audio.separate import CHECKPOINT_FORMAT, model_kwargs_for
from ssmkit.core import create_model
from ssmkit.core.optional import require

_pl = require("lightning", "train").pytorch


class SeparationTask(_pl.LightningModule):
    """Train any ``(B, T) -> (B, n_src, T)`` separator with utterance-level PIT SI-SNR.

    Recipe of Mamba-TasNet (Jiang et al., arXiv 2407.09732): Adam, linear warm-up then cosine decay,
    gradient-norm clipping at 5, optional bf16 autocast; validation reports PIT SI-SNRi.

    Args:
        model: registry name (``"audio.mamba_tasnet_xs"``) or a module.
        model_kwargs: overrides for the registry factory.
        lr: peak learning rate (1.5e-4 in the paper; 1e-3 trains faster on small data).
        weight_decay: Adam(W) weight decay.
        warmup_steps: linear warm-up steps (20k in the paper).
        total_steps: cosine horizon; ``None`` = the trainer's estimated stepping batches.
        clip_grad: max gradient norm (``None`` or 0 disables).
        bf16: run the forward under ``torch.autocast(dtype=bfloat16)`` (loss in fp32).
        clip_db: cap per-utterance SI-SNR in the loss (SpeechBrain: 30 dB); ``None`` = no cap.
    """

    def __init__(
        self,
        model: str | nn.Module = "audio.mamba_tasnet_xs",
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1.5e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 1000,
        total_steps: int | None = None,
        clip_grad: float | None = 5.0,
        bf16: bool = False,
        clip_db: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"] if isinstance(model, nn.Module) else None)
        self.model = (
            model if isinstance(model, nn.Module) else create_model(model, **(model_kwargs or {}))
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["separator_format"] = CHECKPOINT_FORMAT

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the model with the wiring of the checkpoint's format before its weights load
        (see :func:`ssmkit.audio.separate.model_kwargs_for`)."""
        name = self.hparams.get("model")
        if not isinstance(name, str):
            return
        kwargs = dict(self.hparams.get("model_kwargs") or {})
        rebuilt = model_kwargs_for(name, kwargs, checkpoint.get("separator_format", 1))
        if rebuilt == kwargs:
            return
        if self._trainer is not None:  # resuming: the optimizer already holds the current weights
            raise ValueError(
                f"This checkpoint's {name} was trained with {rebuilt} (an older "
                "separator_format); resume it from a task built with "
                f"SeparationTask({name!r}, model_kwargs={rebuilt!r})."
            )
        self.model = create_model(name, **rebuilt)
        self.hparams["model_kwargs"] = rebuilt

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """``(B, T) -> (B, n_src, T)`` (fp32 output, also under bf16 autocast)."""
        ctx = (
            torch.autocast(device_type=mixture.device.type, dtype=torch.bfloat16)
            if self.hparams.bf16
            else contextlib.nullcontext()
        )
        with ctx:
            out = self.model(mixture)
        return out.float()

    def _check_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        mixture, sources = batch
        if sources.dim() != 3 or mixture.shape[-1] != sources.shape[-1]:
            raise ValueError(
                "SeparationTask: a batch must be (mixture (B, T), sources (B, n_src, T)); got "
                f"{tuple(mixture.shape)} and {tuple(sources.shape)}."
            )
        return mixture, sources

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        mixture, sources = self._check_batch(batch)
        loss = pit_si_snr(self(mixture), sources, clip_db=self.hparams.clip_db)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: Any, stage: str) -> torch.Tensor:
        mixture, sources = self._check_batch(batch)
        est = self(mixture)
        loss = pit_si_snr(est, sources)
        improvement = si_snr_improvement(est, sources, mixture).mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=mixture.shape[0])
        self.log(f"{stage}/si_snri", improvement, prog_bar=True, batch_size=mixture.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        clip = gradient_clip_val or self.hparams.clip_grad
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = hp.total_steps
        if total is None:
            total = int(self.trainer.estimated_stepping_batches) if self.trainer else 100_000
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(hp.warmup_steps, max(total, 1))
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def warmup_cosine(warmup: int, total: int, floor: float = 0.0) -> Any:
    """LR multiplier: linear from 0 to 1 over ``warmup`` steps, then cosine to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
