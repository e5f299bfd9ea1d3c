"""``ImageClassificationTask``: fine-tune (or train) any timm / ssmkit image model with Lightning.

DeiT-style recipe (Touvron et al. 2021, arXiv 2012.12877), as used by Vim (arXiv 2401.09417) and
VMamba (arXiv 2401.10166): AdamW from timm's optimizer factory with layer-wise lr decay
(``group_matcher``), linear warm-up then cosine decay per step, label smoothing, mixup / cutmix
(soft-target cross entropy), optional EMA of the weights (evaluated instead of the raw weights),
top-1 / top-5 accuracy. ``init_checkpoint`` loads a checkpoint of ours or the authors' (converted by
``checkpoint_filter_fn``; a head of another size is dropped), ``freeze_backbone`` trains the head
only, until ``unfreeze_at_epoch``.

Needs ``timm`` and ``lightning`` (``pip install "ssmkit[vision,train]"``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn

from ssmkit.core.files import atomic_output
from ssmkit.core.optional import require


def build_model(name: str, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A model by timm name (``"vim_tiny_patch16_224"``) or ssmkit registry name (``"vision.vim_tiny"``)."""
    if name.startswith("vision."):
        import ssmkit

        if pretrained:
            raise ValueError(
                f"pretrained=True needs a timm name; {name!r} is an ssmkit registry name. Use "
                "init_checkpoint=<file> or the timm name (e.g. 'vim_tiny_patch16_224')."
            )
        return ssmkit.create_model(name, num_classes=num_classes, **kwargs)
    timm = require("timm", "vision")
    import ssmkit.vision  # registers the Vim / VMamba names with timm

    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def load_init_checkpoint(model: nn.Module, path: str) -> list[str]:
    """Load ``path`` into ``model`` (authors' or ssmkit checkpoints); returns the dropped keys.

    The classifier is dropped when its shape differs (fine-tuning on a new label set); any other
    missing or unexpected key is an error.
    """
    from ssmkit.vision.convert import checkpoint_filter_fn, unwrap_state_dict

    if not Path(path).is_file():
        raise ValueError(f"init_checkpoint: {path} is not a file.")
    # The authors' Vim files also pickle their training ``args`` (an argparse.Namespace): allow
    # exactly that class on top of weights_only's tensors and containers.
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(path, map_location="cpu", weights_only=True)
    try:
        state = checkpoint_filter_fn(raw, model)
    except TypeError:  # not a Vim / VMamba model: load as is
        state = unwrap_state_dict(raw)
    target = model.state_dict()
    dropped = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    for k in dropped:
        if not k.startswith(("head.", "fc.", "classifier.")):
            raise ValueError(
                f"init_checkpoint: {k} has shape {tuple(state[k].shape)} in {path} but "
                f"{tuple(target[k].shape)} in the model; build the model with the checkpoint's sizes."
            )
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k not in dropped]
    if bad_missing or unexpected:
        raise ValueError(
            f"init_checkpoint: {path} does not fit the model: missing {bad_missing[:8]}, "
            f"unexpected {list(unexpected)[:8]}."
        )
    return dropped


class ImageClassificationTask(LightningModule):
    """Image classification with a timm-compatible backbone (Vim, VMamba, or any timm model).

    Args:
        model_name: timm name (``"vim_tiny_patch16_224"``, ``"vmamba_tiny"``, ``"deit_tiny_patch16_224"``)
            or ssmkit name (``"vision.vim_tiny"``).
        num_classes: number of classes.
        model_kwargs: extra model arguments (``img_size``, ``depth``, ``drop_path_rate``, ...).
        pretrained: timm pretrained weights (needs the files / network).
        init_checkpoint: checkpoint file to start from (authors' or ours).
        opt: timm optimizer name.
        lr: peak learning rate.
        weight_decay: decoupled weight decay (not on norms, biases, A_log, D, pos_embed, cls).
        layer_decay: layer-wise lr decay factor (``None``: off).
        warmup_steps: linear warm-up steps (``warmup_epochs`` converted if given instead).
        warmup_epochs: warm-up in epochs (used when ``warmup_steps`` is 0).
        min_lr_ratio: cosine floor as a fraction of ``lr``.
        label_smoothing: label smoothing.
        mixup_alpha, cutmix_alpha: mixup / cutmix strength (0: off).
        mixup_prob: probability of applying mixup / cutmix to a batch.
        ema_decay: EMA decay (``None``: no EMA); validation / test then use the EMA weights.
        freeze_backbone: train only the classifier.
        unfreeze_at_epoch: unfreeze the backbone at this epoch (``None``: stay frozen).
    """

    def __init__(
        self,
        model_name: str = "vim_tiny_patch16_224",
        num_classes: int = 1000,
        model_kwargs: dict[str, Any] | None = None,
        pretrained: bool = False,
        init_checkpoint: str | None = None,
        opt: str = "adamw",
        lr: float = 5e-4,
        weight_decay: float = 0.05,
        layer_decay: float | None = None,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.01,
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        ema_decay: float | None = None,
        freeze_backbone: bool = False,
        unfreeze_at_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}.")
        self.save_hyperparameters()
        self.model = build_model(model_name, num_classes, pretrained, **(model_kwargs or {}))
        if init_checkpoint:
            load_init_checkpoint(self.model, init_checkpoint)
        self.ema: nn.Module | None = None
        if ema_decay is not None:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            timm_data = require("timm.data", "vision")
            self.mixup = timm_data.Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        if freeze_backbone:
            self.set_backbone_trainable(False)

    # --------------------------------------------------------------------- freezing
    def _head_params(self) -> set[int]:
        head = self.model.get_classifier() if hasattr(self.model, "get_classifier") else None
        return {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (``False``) or unfreeze every parameter except the classifier's."""
        head = self._head_params()
        if not head:
            raise ValueError("freeze_backbone needs a model with a classifier (get_classifier()).")
        for p in self.model.parameters():
            if id(p) not in head:
                p.requires_grad_(trainable)

    def on_train_epoch_start(self) -> None:
        if self.hparams.unfreeze_at_epoch is not None and (
            self.current_epoch >= self.hparams.unfreeze_at_epoch
        ):
            self.set_backbone_trainable(True)

    # --------------------------------------------------------------------- steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.model(images)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        n = getattr(dm, "num_classes", None) if dm is not None else None
        if stage == "fit" and isinstance(n, int) and n != self.hparams.num_classes:
            raise ValueError(
                f"The data has {n} classes but the task was built with num_classes="
                f"{self.hparams.num_classes}; set --model.num_classes={n}."
            )

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        if self.mixup is not None:
            if images.shape[0] % 2:
                raise ValueError(
                    f"mixup/cutmix needs an even batch size, got {images.shape[0]}; set an even "
                    "--data.batch_size (the last partial batch is dropped when shuffling)."
                )
            images, soft = self.mixup(images, targets)
            logits = self(images)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self(images)
            loss = F.cross_entropy(
                logits.float(), targets, label_smoothing=self.hparams.label_smoothing
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            decay = self.hparams.ema_decay
            with torch.no_grad():
                for e, p in zip(self.ema.state_dict().values(), self.model.state_dict().values()):
                    if e.dtype.is_floating_point:
                        e.lerp_(p.detach(), 1.0 - decay)
                    else:
                        e.copy_(p)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> None:
        images, targets = batch
        model = self.ema if self.ema is not None else self.model
        logits = model(images).float()
        loss = F.cross_entropy(logits, targets)
        k = min(5, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices
        hit = top.eq(targets[:, None])
        self.log(f"{prefix}/loss", loss, prog_bar=True, sync_dist=True)
        self.log(f"{prefix}/top1", hit[:, 0].float().mean(), prog_bar=True, sync_dist=True)
        self.log(f"{prefix}/top5", hit.any(dim=-1).float().mean(), sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(
        self, batch: tuple[torch.Tensor, Any], batch_idx: int
    ) -> dict[str, torch.Tensor]:
        images, index = batch
        model = self.ema if self.ema is not None else self.model
        probs = model(images).float().softmax(dim=-1)
        conf, pred = probs.max(dim=-1)
        return {"index": torch.as_tensor(index), "pred": pred, "prob": conf}

    # --------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        optim = require("timm.optim", "vision")
        h = self.hparams
        # timm leaves parameters that do not require grad out of the optimizer; a frozen backbone
        # joins it too (its grads stay None, so it does not move) so that unfreezing trains it.
        frozen = [p for p in self.model.parameters() if not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)
        try:
            optimizer = optim.create_optimizer_v2(
                self.model,
                opt=h.opt,
                lr=h.lr,
                weight_decay=h.weight_decay,
                layer_decay=h.layer_decay,
            )
        finally:
            for p in frozen:
                p.requires_grad_(False)
        # Layer-wise decay: timm stores each group's factor as ``lr_scale`` and only timm's own
        # schedulers apply it; bake it into the group lr so LambdaLR keeps the ratios.
        for group in optimizer.param_groups:
            group["lr"] = h.lr * group.get("lr_scale", 1.0)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = h.warmup_steps
        if (
            not warmup
            and h.warmup_epochs
            and self.trainer.max_epochs
            and self.trainer.max_epochs > 0
        ):
            warmup = int(total * h.warmup_epochs / self.trainer.max_epochs)
        warmup = min(warmup, total - 1) if total > 1 else 0

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return h.min_lr_ratio + (1 - h.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class PredictionCSVWriter(BasePredictionWriter):
    """Write ``path,class,confidence`` rows for ``ssmkit predict`` (written atomically).

    Args:
        output_path: the CSV file.
    """

    def __init__(self, output_path: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.output_path = Path(output_path)

    def write_on_epoch_end(
        self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any
    ) -> None:
        dm = trainer.datamodule
        paths = getattr(dm, "predict_paths", None)
        classes = getattr(dm, "classes", None)
        rows = []
        for batch in predictions:
            for i, pred, prob in zip(
                batch["index"].tolist(), batch["pred"].tolist(), batch["prob"].tolist()
            ):
                name = classes[pred] if classes and pred < len(classes) else str(pred)
                rows.append((str(paths[i]) if paths else str(i), name, f"{prob:.6f}"))
        with atomic_output(self.output_path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "class", "confidence"])
            writer.writerows(rows)
