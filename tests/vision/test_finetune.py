"""Fine-tuning recipe: ImageFolderDataModule errors, a 2-step fit, checkpoint init, freezing, predict."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
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


def test_unfreeze_at_epoch_trains_the_backbone(folder: Path, tmp_path: Path) -> None:
    """Frozen for epoch 0 (head only), then the backbone joins: it must be in the optimizer."""
    from lightning.pytorch import Callback

    class Snapshot(Callback):
        def __init__(self) -> None:
            self.weights: list[tuple[torch.Tensor, torch.Tensor]] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            model = pl_module.model
            self.weights.append(
                (
                    model.layers[0].mixer.in_proj.weight.detach().clone(),
                    model.head.weight.detach().clone(),
                )
            )

    dm = ImageFolderDataModule(str(folder), img_size=32, batch_size=4, num_workers=0)
    task = ImageClassificationTask(
        "vision.vim_tiny",
        num_classes=2,
        model_kwargs=TINY,
        lr=1e-2,
        freeze_backbone=True,
        unfreeze_at_epoch=1,
    )
    start = task.model.layers[0].mixer.in_proj.weight.detach().clone()
    snap = Snapshot()
    trainer = _trainer(
        tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=0, callbacks=[snap]
    )
    trainer.fit(task, datamodule=dm)
    (backbone0, head0), (backbone1, head1) = snap.weights
    assert torch.equal(backbone0, start)  # epoch 0: frozen
    assert not torch.equal(backbone1, backbone0)  # epoch 1: trained
    assert not torch.equal(head1, head0)


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
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="predict_dir.*contains no images"):
        ImageFolderDataModule(str(tmp_path), num_workers=0, predict_dir="nothing").setup("predict")


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


_DDP_SCRIPT = '''
"""A 2-process CPU DDP fit of a tiny Vim (Lightning's "ddp" strategy re-runs this script as rank 1)."""
import hashlib
import json
import sys

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from ssmkit.vision.data import ImageFolderDataModule
from ssmkit.vision.task import ImageClassificationTask

data_dir, out_dir = sys.argv[1], sys.argv[2]
TINY = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, d_state=4, expand=1)


def digest(module):
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


class Record(Callback):
    def on_train_start(self, trainer, pl_module):
        self.indices = [int(i) for i in trainer.train_dataloader.sampler]
        self.initial = digest(pl_module.model)

    def on_train_end(self, trainer, pl_module):
        report = dict(
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            backend=torch.distributed.get_backend(),
            indices=self.indices,
            initial=self.initial,
            final=digest(pl_module.model),
            steps=trainer.global_step,
            val_top1=float(trainer.callback_metrics["val/top1"]),
        )
        with open(f"{out_dir}/rank{trainer.global_rank}.json", "w") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    seed_everything(0)
    torch.set_num_threads(1)
    dm = ImageFolderDataModule(data_dir, img_size=32, batch_size=2, num_workers=0)
    task = ImageClassificationTask("vision.vim_tiny", num_classes=2, model_kwargs=TINY, lr=1e-2)
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out_dir,
        callbacks=[Record()],
    )
    trainer.fit(task, datamodule=dm)
'''


@pytest.mark.skipif(
    os.environ.get("SSMKIT_TEST_DDP") != "1",
    reason="starts 3 Python processes (1-2 minutes on 2 loaded cores); run with SSMKIT_TEST_DDP=1",
)
def test_ddp_two_cpu_processes(folder: Path, tmp_path: Path) -> None:
    """`strategy="ddp"`, 2 CPU processes (gloo): each rank trains on its own half of the data, and
    the all-reduced gradients leave both ranks with bit-identical weights and the synced metric."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(_DDP_SCRIPT)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")
    }
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert all(r["steps"] == 2 for r in ranks)
    first, second = (set(r["indices"]) for r in ranks)
    assert not first & second and first | second == set(range(8)), (first, second)
    assert ranks[0]["initial"] == ranks[1]["initial"]
    assert ranks[0]["final"] == ranks[1]["final"] != ranks[0]["initial"]
    assert ranks[0]["val_top1"] == ranks[1]["val_top1"]


def test_cli_predict_folder_to_csv_with_init_checkpoint(folder: Path, tmp_path: Path) -> None:
    """The README's `ssmkit predict` line: a recipe, --model.init_checkpoint, a folder -> CSV."""
    from ssmkit.__main__ import main

    kwargs = dict(img_size=32, patch_size=8, embed_dim=16, depth=1, d_state=2, expand=1)
    source = ImageClassificationTask("vision.vim_tiny", num_classes=2, model_kwargs=kwargs)
    with torch.no_grad():
        source.model.head.bias.copy_(torch.tensor([-50.0, 50.0]))  # every image -> "dog"
    ckpt = tmp_path / "init.pth"
    torch.save({"model": source.model.state_dict()}, ckpt)
    out = tmp_path / "preds.csv"
    code = main(
        [
            "predict",
            "--config",
            str(CONFIGS / "vim_tiny_finetune.yaml"),
            f"--data.data_dir={folder}",
            "--data.predict_dir=unlabelled",
            "--data.img_size=32",
            "--data.batch_size=2",
            "--data.num_workers=0",
            "--model.num_classes=2",
            "--model.model_name=vision.vim_tiny",
            f"--model.model_kwargs={json.dumps(kwargs)}",
            f"--model.init_checkpoint={ckpt}",
            "--trainer.callbacks+=ssmkit.vision.task.PredictionCSVWriter",
            f"--trainer.callbacks.output_path={out}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert code == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["path", "class", "confidence"]
    assert [Path(r[0]).name for r in rows[1:]] == ["0.png", "1.png", "2.png"]
    assert all(r[1] == "dog" and float(r[2]) > 0.99 for r in rows[1:])
