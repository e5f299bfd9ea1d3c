"""``SegmentationDataModule``: NIfTI images and labels from a Decathlon-style datalist JSON.

Needs the ``bio`` and ``train`` extras (MONAI, nibabel, Lightning); the domain ``__init__`` imports
this module only on first use.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssmkit.core.optional import require

lightning = require("lightning", "train")
require("monai", "bio")


def _check_roi(roi_size: Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != spatial_dims or any(r < 1 for r in roi):
        raise ValueError(
            f"roi_size must have {spatial_dims} positive entries (one per spatial axis for "
            f"spatial_dims={spatial_dims}), got {tuple(roi_size)}."
        )
    return roi


def read_datalist(
    path: str | Path, key: str, base_dir: str | Path | None = None, need_label: bool = True
) -> list[dict[str, Any]]:
    """Entries of ``key`` in a Decathlon datalist with absolute, existing file paths.

    The JSON holds ``{"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"},
    ...], "validation": [...], "test": ["imagesTs/b.nii.gz" or {"image": ...}, ...]}``; relative
    paths are resolved against ``base_dir`` (default: the JSON's folder).

    Raises:
        FileNotFoundError: the JSON or a listed image/label file does not exist.
        ValueError: the key is missing or an entry lacks ``image`` (or ``label``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist JSON not found: {path}")
    content = json.loads(path.read_text())
    if key not in content:
        raise ValueError(f"datalist {path} has no {key!r} list; keys present: {sorted(content)}.")
    base = Path(base_dir) if base_dir is not None else path.parent
    entries = []
    for i, raw in enumerate(content[key]):
        item = {"image": raw} if isinstance(raw, str) else dict(raw)
        fields = ("image", "label") if need_label else ("image",)
        for field in fields:
            if field not in item:
                raise ValueError(f"datalist {path} [{key!r}][{i}] has no {field!r} entry: {raw!r}.")
        for field in ("image", "label"):
            if field in item:
                file = Path(item[field])
                file = file if file.is_absolute() else base / file
                if not file.exists():
                    raise FileNotFoundError(
                        f"datalist {path} [{key!r}][{i}] {field} file not found: {file}"
                    )
                item[field] = str(file)
        entries.append(item)
    if not entries:
        raise ValueError(f"datalist {path} has an empty {key!r} list.")
    return entries


class SegmentationDataModule(lightning.LightningDataModule):
    """NIfTI segmentation data with MONAI dict transforms, caching and random patch sampling.

    Training: LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd -> intensity
    (ScaleIntensityRanged clip to [0, 1] when ``intensity_range`` is given, else per-channel
    z-score over non-zero voxels) -> SpatialPadd(roi) -> RandCropByPosNegLabeld (``num_samples``
    patches per volume, so a batch holds ``batch_size * num_samples`` patches) -> random flips.
    Validation and prediction keep whole volumes (batch 1) for sliding-window inference.

    Args:
        datalist: Decathlon-style JSON (see :func:`read_datalist`).
        data_root: base folder of relative paths (default: the JSON's folder).
        spatial_dims: 3 for volumes, 2 for images stored as NIfTI.
        roi_size: training patch size (a multiple of the network's stride).
        pixdim: target voxel spacing (Spacingd), or None to keep the native grid.
        axcodes: target orientation (Orientationd), e.g. "RAS", or None to keep it.
        intensity_range: (a_min, a_max) for CT-like clipping, or None for z-score.
        num_samples: patches cropped from each training volume.
        pos_fraction: probability a patch is centred on foreground.
        batch_size: training volumes per batch.
        val_fraction: share of "training" held out when the JSON has no "validation" list.
        cache_rate: fraction of the deterministic pre-processing cached in memory.
        num_workers: DataLoader workers.
        seed: seed of the train/validation split.
    """

    def __init__(
        self,
        datalist: str,
        data_root: str | None = None,
        spatial_dims: int = 3,
        roi_size: Sequence[int] = (96, 96, 96),
        pixdim: Sequence[float] | None = None,
        axcodes: str | None = "RAS",
        intensity_range: tuple[float, float] | None = None,
        num_samples: int = 2,
        pos_fraction: float = 0.5,
        batch_size: int = 2,
        val_fraction: float = 0.2,
        cache_rate: float = 1.0,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        self.roi_size = _check_roi(roi_size, spatial_dims)
        if pixdim is not None and len(pixdim) != spatial_dims:
            raise ValueError(f"pixdim needs {spatial_dims} spacings, got {tuple(pixdim)}.")
        if axcodes is not None and len(axcodes) != spatial_dims:
            raise ValueError(
                f"axcodes needs {spatial_dims} letters for spatial_dims={spatial_dims}, got {axcodes!r}."
            )
        if intensity_range is not None and not (
            len(intensity_range) == 2 and intensity_range[0] < intensity_range[1]
        ):
            raise ValueError(
                f"intensity_range must be (a_min, a_max) with a_min < a_max, got {intensity_range!r}."
            )
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must lie in [0, 1], got {pos_fraction}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}.")
        self.datalist, self.data_root = datalist, data_root
        self.spatial_dims = spatial_dims
        self.pixdim = tuple(pixdim) if pixdim is not None else None
        self.axcodes = axcodes
        self.intensity_range = tuple(intensity_range) if intensity_range is not None else None
        self.num_samples, self.pos_fraction = num_samples, pos_fraction
        self.batch_size, self.val_fraction = batch_size, val_fraction
        self.cache_rate, self.num_workers, self.seed = cache_rate, num_workers, seed
        self.train_ds: Any = None
        self.val_ds: Any = None
        self.predict_ds: Any = None

    def _load_transforms(self, keys: tuple[str, ...]) -> list[Any]:
        from monai import transforms as mt

        modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
        chain: list[Any] = [mt.LoadImaged(keys, image_only=True), mt.EnsureChannelFirstd(keys)]
        if self.spatial_dims == 2:
            # 2-D images stored as NIfTI load as (C, H, W, 1): drop the singleton slice axis.
            chain.append(mt.Lambdad(keys, _squeeze_trailing_slice))
        if self.axcodes is not None:
            chain.append(mt.Orientationd(keys, axcodes=self.axcodes))
        if self.pixdim is not None:
            chain.append(mt.Spacingd(keys, pixdim=self.pixdim, mode=modes))
        if self.intensity_range is not None:
            low, high = self.intensity_range
            chain.append(
                mt.ScaleIntensityRanged(
                    "image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True
                )
            )
        else:
            chain.append(mt.NormalizeIntensityd("image", nonzero=True, channel_wise=True))
        return chain

    def train_transforms(self) -> Any:
        from monai import transforms as mt

        keys = ("image", "label")
        return mt.Compose(
            [
                *self._load_transforms(keys),
                mt.SpatialPadd(keys, spatial_size=self.roi_size),
                mt.RandCropByPosNegLabeld(
                    keys,
                    label_key="label",
                    spatial_size=self.roi_size,
                    pos=self.pos_fraction,
                    neg=1.0 - self.pos_fraction,
                    num_samples=self.num_samples,
                    image_key="image",
                    image_threshold=0,
                ),
                *(mt.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(self.spatial_dims)),
                mt.EnsureTyped(keys, track_meta=False),
            ]
        )

    def eval_transforms(self, with_label: bool = True) -> Any:
        from monai import transforms as mt

        keys = ("image", "label") if with_label else ("image",)
        return mt.Compose(self._load_transforms(keys))

    def setup(self, stage: str | None = None) -> None:
        from monai.data import CacheDataset, Dataset

        if stage in (None, "fit", "validate") and self.train_ds is None:
            train = read_datalist(self.datalist, "training", self.data_root)
            try:
                val = read_datalist(self.datalist, "validation", self.data_root)
            except ValueError:
                shuffled = train[:]
                random.Random(self.seed).shuffle(shuffled)
                n_val = max(1, math.floor(self.val_fraction * len(shuffled)))
                if n_val >= len(shuffled):
                    raise ValueError(
                        f"datalist {self.datalist} has {len(train)} training cases and no "
                        "'validation' list: need at least 2 cases to hold one out."
                    ) from None
                val, train = shuffled[:n_val], shuffled[n_val:]
            self.train_ds = CacheDataset(
                train, self.train_transforms(), cache_rate=self.cache_rate, progress=False
            )
            self.val_ds = CacheDataset(
                val, self.eval_transforms(), cache_rate=self.cache_rate, progress=False
            )
        if stage == "predict" and self.predict_ds is None:
            cases = read_datalist(self.datalist, "test", self.data_root, need_label=False)
            self.predict_ds = Dataset(cases, self.eval_transforms(with_label=False))

    def train_dataloader(self) -> Any:
        from monai.data import DataLoader

        return DataLoader(
            self.train_ds,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> Any:
        from monai.data import DataLoader

        return DataLoader(self.val_ds, batch_size=1, num_workers=self.num_workers)

    def predict_dataloader(self) -> Any:
        from monai.data import DataLoader

        return DataLoader(self.predict_ds, batch_size=1, num_workers=self.num_workers)


def _squeeze_trailing_slice(x: Any) -> Any:
    if x.ndim == 4 and x.shape[-1] == 1:
        return x[..., 0]
    if x.ndim != 3:
        raise ValueError(
            f"spatial_dims=2 expects 2-D images (stored as (H, W) or (H, W, 1)), but a loaded "
            f"image has shape {tuple(x.shape[1:])} after the channel axis."
        )
    return x
