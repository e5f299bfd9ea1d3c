"""Fine-tuning recipe: ImageFolderDataModule errors, a 2-step fit, checkpoint init, freezing, predict."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning", reason="the fine-tuning task needs the train extra (lightning)")
pytest.importorskip("torchvision", reason="ImageFolderDataModule needs torchvision")
pytest.importorskip("timm", reason="the fine-tuning task needs timm")

from lightning.pytorch import Trainer

from ssmkit.vision.data import ImageFolderDataModule
from ssmkit.vision.task import ImageClassificationTask, PredictionCSVWriter

TINY = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, d_state=4, expand=1)
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "vision"


def _write_images(folder: Path, n: int, value: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = torch.full((32, 32, 3), value, dtype=torch.uint8)
        pixels[i % 32] = 255 - value
        Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    for split in ("train", "val"):
        _write_images(root / split / "cat", 4, 30)
        _write_images(root / split / "dog", 4, 220)
    _write_images(root / "unlabelled", 3, 100)
    return root


def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_two_step_finetune_with_mixup_ema_layer_decay(folder: Path, tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(folder), img_size=32, batch_size=4, num_workers=0)
    task = ImageClassificationTask(
        "vision.vim_tiny",
        num_classes=2,
        model_kwargs=TINY,
        lr=1e-3,
        layer_decay=0.75,
        warmup_steps=1,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        ema_decay=0.5,
    )
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    after = task.model.state_dict()
    assert not torch.equal(before["layers.0.mixer.A_b_log"], after["layers.0.mixer.A_b_log"])
    ema = task.ema.state_dict()
    assert not torch.equal(ema["head.weight"], after["head.weight"])
    assert not torch.equal(ema["head.weight"], before["head.weight"])
    # Layer-wise lr decay reaches the optimizer: group lrs differ by exactly their lr_scale.
    groups = trainer.optimizers[0].param_groups
    assert len({g["lr"] for g in groups}) > 1
    assert len({round(g["lr"] / g["lr_scale"], 12) for g in groups}) == 1
    metrics = trainer.callback_metrics
    assert {"val/top1", "val/top5", "val/loss"} <= set(metrics)
    assert 0.0 <= float(metrics["val/top1"]) <= float(metrics["val/top5"]) <= 1.0
    assert dm.classes == ["cat", "dog"]


def test_init_checkpoint_freeze_and_predict_csv(folder: Path, tmp_path: Path) -> None:
    source = ImageClassificationTask("vision.vim_tiny", num_classes=5, model_kwargs=TINY)
    ckpt = tmp_path / "authors_style.pth"
    # The authors' layout: weights under "model" beside the pickled training args (a Namespace);
    # the other head size is dropped on load.
    torch.save({"model": source.model.state_dict(), "args": argparse.Namespace(lr=1e-3)}, ckpt)
    task = ImageClassificationTask(
        "vision.vim_tiny",
        num_classes=2,
        model_kwargs=TINY,
        init_checkpoint=str(ckpt),
        freeze_backbone=True,
    )
    torch.testing.assert_close(task.model.pos_embed, source.model.pos_embed)
    assert task.model.head.weight.shape == (2, 16)
    assert not task.model.pos_embed.requires_grad and task.model.head.weight.requires_grad
    task.on_train_epoch_start()  # unfreeze_at_epoch=None: stays frozen
    assert not task.model.layers[0].mixer.in_proj.weight.requires_grad
    task.hparams.unfreeze_at_epoch = 0
    task.on_train_epoch_start()
    assert task.model.layers[0].mixer.in_proj.weight.requires_grad

    out = tmp_path / "preds" / "predictions.csv"
    dm = ImageFolderDataModule(
        str(folder), img_size=32, batch_size=2, num_workers=0, predict_dir="unlabelled"
    )
    trainer = _trainer(tmp_path, callbacks=[PredictionCSVWriter(str(out))])
    trainer.predict(task, datamodule=dm, return_predictions=False)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["path", "class", "confidence"]
    assert len(rows) == 4 and all(r[1] in ("cat", "dog") for r in rows[1:])
    assert sorted(Path(r[0]).name for r in rows[1:]) == ["0.png", "1.png", "2.png"]


def test_bad_folders_are_explained(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nope"), num_workers=0).num_classes  # noqa: B018
    loose = tmp_path / "loose"
    _write_images(loose / "train", 2, 10)
    with pytest.raises(ValueError, match="loose images"):
        ImageFolderDataModule(str(loose), num_workers=0).setup("fit")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    _write_images(empty / "train" / "b", 1, 10)
    with pytest.raises(ValueError, match=r"\['a'\].*no images"):
        ImageFolderDataModule(str(empty), num_workers=0).setup("fit")
    mismatch = tmp_path / "mismatch"
    _write_images(mismatch / "train" / "a", 1, 10)
    _write_images(mismatch / "val" / "b", 1, 10)
    with pytest.raises(ValueError, match="differ from the training classes"):
        ImageFolderDataModule(str(mismatch), num_workers=0).setup("fit")
    dm = ImageFolderDataModule(str(folder), img_size=32, batch_size=4, num_workers=0)
    task = ImageClassificationTask("vision.vim_tiny", num_classes=3, model_kwargs=TINY)
    with pytest.raises(ValueError, match="num_classes=2"):
        _trainer(tmp_path, max_steps=1).fit(task, datamodule=dm)
    with pytest.raises(ValueError, match="init_checkpoint"):
        ImageClassificationTask(
            "vision.vim_tiny", num_classes=2, model_kwargs=TINY, init_checkpoint="/no/file.pth"
        )


def test_cli_fit_from_recipe(folder: Path, tmp_path: Path) -> None:
    from ssmkit.__main__ import main

    config = CONFIGS / "vim_tiny_finetune.yaml"
    code = main(
        [
            "fit",
            "--config",
            str(config),
            f"--data.data_dir={folder}",
            "--data.img_size=32",
            "--data.batch_size=4",
            "--data.num_workers=0",
            "--model.num_classes=2",
            "--model.model_name=vision.vim_tiny",
            '--model.model_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 1, "d_state": 2, "expand": 1}',
            "--model.mixup_alpha=0",
            "--model.cutmix_alpha=0",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert code == 0
