"""``ImageFolderDataModule``: class-per-folder image data with timm's train / eval transforms.

Layout (torchvision ``ImageFolder``)::

    data_dir/train/<class>/*.jpg     data_dir/val/<class>/*.jpg     [data_dir/test/<class>/...]

``predict_dir`` may be any folder of images (searched recursively, no class folders needed); the
file paths are kept in ``predict_paths`` for :class:`~ssmkit.vision.task.PredictionCSVWriter`.
Needs ``torchvision``, ``timm`` and ``lightning`` (``pip install "ssmkit[vision,train]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ssmkit.core.optional import require

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _check_class_folder(root: Path, argument: str) -> list[str]:
    """Class names of an ImageFolder root, with explicit errors for every malformed layout."""
    if not root.exists():
        raise ValueError(
            f"{argument}: folder {root} does not exist. Expected <root>/<class_name>/<image files>."
        )
    if not root.is_dir():
        raise ValueError(f"{argument}: {root} is a file, expected a folder of class sub-folders.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMG_EXTENSIONS][:3]
        hint = (
            f" It holds loose images ({', '.join(loose)}, ...): move them into one sub-folder per "
            "class."
            if loose
            else ""
        )
        raise ValueError(
            f"{argument}: {root} has no class sub-folders (expected <root>/<class>/<images>).{hint}"
        )
    empty = [c for c in classes if not any(_images_in(root / c))]
    if empty:
        raise ValueError(
            f"{argument}: class folder(s) {empty} in {root} contain no images with extensions "
            f"{IMG_EXTENSIONS}; add images or remove the folders."
        )
    return classes


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
    )


class ImageFiles(Dataset):
    """All images under a folder (recursive, sorted), for prediction: yields ``(image, index)``."""

    def __init__(self, root: Path, transform: Any) -> None:
        if not root.is_dir():
            raise ValueError(f"predict_dir: {root} is not a folder of images.")
        self.paths = _images_in(root)
        if not self.paths:
            raise ValueError(
                f"predict_dir: {root} contains no images with extensions {IMG_EXTENSIONS}."
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            return self.transform(img.convert("RGB")), index


class ImageFolderDataModule(LightningDataModule):
    """Image classification data from class-per-folder directories with timm transforms.

    Args:
        data_dir: root holding the split folders.
        train_dir, val_dir, test_dir: split sub-folders (``test_dir=None``: no test split).
        predict_dir: folder of images to predict (absolute, or relative to ``data_dir``).
        img_size: network input size (square).
        batch_size: per-device batch size.
        num_workers: loader workers.
        auto_augment: timm auto-augment policy for training, e.g. ``"rand-m9-mstd0.5-inc1"``.
        re_prob: random-erasing probability for training.
        hflip: horizontal-flip probability for training.
        scale: RandomResizedCrop scale range.
        crop_pct: eval center-crop fraction.
        interpolation: resize interpolation.
        mean, std: normalisation (ImageNet by default).
    """

    def __init__(
        self,
        data_dir: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        predict_dir: str | None = None,
        img_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 4,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        hflip: float = 0.5,
        scale: tuple[float, float] = (0.08, 1.0),
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if img_size < 8:
            raise ValueError(f"img_size must be >= 8 pixels, got {img_size}.")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.classes: list[str] | None = None
        self.predict_paths: list[Path] = []
        self._datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        """Number of classes of the training split (reads the folder names)."""
        if self.classes is None:
            self.classes = _check_class_folder(self.data_dir / self.hparams.train_dir, "train_dir")
        return len(self.classes)

    def transform(self, training: bool) -> Any:
        """timm ``create_transform`` for training (augmenting) or evaluation."""
        timm_data = require("timm.data", "vision")
        h = self.hparams
        kwargs: dict[str, Any] = dict(
            input_size=(3, h.img_size, h.img_size),
            is_training=training,
            interpolation=h.interpolation,
            mean=tuple(h.mean),
            std=tuple(h.std),
        )
        if training:
            kwargs.update(
                auto_augment=h.auto_augment,
                re_prob=h.re_prob,
                hflip=h.hflip,
                scale=tuple(h.scale),
            )
        else:
            kwargs.update(crop_pct=h.crop_pct)
        return timm_data.create_transform(**kwargs)

    def _folder(self, name: str, argument: str, training: bool) -> Dataset:
        datasets = require("torchvision.datasets", "vision")
        root = self.data_dir / name
        classes = _check_class_folder(root, argument)
        if self.classes is None:
            self.classes = _check_class_folder(self.data_dir / self.hparams.train_dir, "train_dir")
        if classes != self.classes:
            raise ValueError(
                f"{argument}: classes {classes} in {root} differ from the training classes "
                f"{self.classes}; every split needs the same class folders."
            )
        return datasets.ImageFolder(str(root), transform=self.transform(training))

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        if not self.data_dir.is_dir():
            raise ValueError(f"data_dir: {self.data_dir} is not a folder.")
        if stage in (None, "fit"):
            self._datasets["train"] = self._folder(h.train_dir, "train_dir", training=True)
        if stage in (None, "fit", "validate"):
            self._datasets["val"] = self._folder(h.val_dir, "val_dir", training=False)
        if stage in (None, "test"):
            if h.test_dir is None:
                raise ValueError("test_dir is not set: pass --data.test_dir=<folder> to test.")
            self._datasets["test"] = self._folder(h.test_dir, "test_dir", training=False)
        if stage == "predict":
            if h.predict_dir is None:
                raise ValueError("predict_dir is not set: pass --data.predict_dir=<folder>.")
            root = Path(h.predict_dir)
            root = root if root.is_absolute() else self.data_dir / root
            files = ImageFiles(root, self.transform(training=False))
            self.predict_paths = files.paths
            self._datasets["predict"] = files
            if self.classes is None and (self.data_dir / h.train_dir).is_dir():
                self.classes = _check_class_folder(self.data_dir / h.train_dir, "train_dir")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, split))
        return DataLoader(
            self._datasets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            drop_last=shuffle and len(self._datasets[split]) > self.hparams.batch_size,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
