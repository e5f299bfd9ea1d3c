"""SegmentationDataModule over a Decathlon datalist of NIfTI files (synthetic MONAI volumes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("monai", reason="the bio extra (MONAI) is not installed")
pytest.importorskip("nibabel", reason="the bio extra (nibabel) is not installed")
pytest.importorskip("lightning", reason="the train extra (Lightning) is not installed")

from ssmkit.bio.data import SegmentationDataModule, read_datalist
from ssmkit.bio.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("vol"), n_train=3, n_val=1, shape=(24, 20, 16)
    )


def test_patches_and_whole_validation_volumes(volumes: Path) -> None:
    dm = SegmentationDataModule(
        str(volumes), roi_size=(16, 16, 16), num_samples=2, batch_size=2, pixdim=(1.5, 1.5, 2.0)
    )
    dm.setup("fit")
    assert len(dm.train_ds) == 3 and len(dm.val_ds) == 1
    batch = next(iter(dm.train_dataloader()))
    # RandCropByPosNegLabeld(num_samples=2) doubles the batch of 2 volumes.
    assert batch["image"].shape == batch["label"].shape == (4, 1, 16, 16, 16)
    assert set(batch["label"].unique().tolist()) <= {0.0, 1.0}
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 1, 24, 20, 16)  # whole volume, native grid kept
    image = val["image"][val["image"] != 0]
    assert abs(float(image.mean())) < 1e-3  # z-scored over non-zero voxels


def test_intensity_range_and_padding(volumes: Path) -> None:
    dm = SegmentationDataModule(
        str(volumes), roi_size=(32, 32, 32), intensity_range=(0.0, 0.5), num_samples=1, batch_size=1
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (1, 1, 32, 32, 32)  # padded up to the ROI, then cropped
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0


def test_split_without_validation_list_and_predict(tmp_path: Path, volumes: Path) -> None:
    content = json.loads(volumes.read_text())
    content.pop("validation")
    for entry in content["training"]:
        entry["image"] = str(volumes.parent / entry["image"])
        entry["label"] = str(volumes.parent / entry["label"])
    content["test"] = [str(volumes.parent / t) for t in content["test"]]
    path = tmp_path / "nosplit.json"
    path.write_text(json.dumps(content))
    dm = SegmentationDataModule(str(path), roi_size=(16, 16, 16), val_fraction=0.34)
    dm.setup("fit")
    assert len(dm.train_ds) == 2 and len(dm.val_ds) == 1
    dm.setup("predict")
    image = next(iter(dm.predict_dataloader()))["image"]
    assert image.shape == (1, 1, 24, 20, 16)


def test_2d_images(tmp_path: Path) -> None:
    path = write_synthetic_dataset(tmp_path, n_train=2, n_val=1, shape=(40, 36))
    dm = SegmentationDataModule(
        str(path), spatial_dims=2, roi_size=(32, 32), axcodes="RA", num_samples=2, batch_size=1
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32)
    assert next(iter(dm.val_dataloader()))["label"].shape == (1, 1, 40, 36)


def test_bad_datalists_and_arguments_raise(tmp_path: Path, volumes: Path) -> None:
    with pytest.raises(FileNotFoundError, match="datalist JSON not found"):
        read_datalist(tmp_path / "missing.json", "training")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"image": "nope.nii.gz", "label": "nope.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="image file not found"):
        read_datalist(bad, "training")
    bad.write_text(json.dumps({"training": [{"label": "x.nii.gz"}]}))
    with pytest.raises(ValueError, match="has no 'image' entry"):
        read_datalist(bad, "training")
    with pytest.raises(ValueError, match="no 'testing' list"):
        read_datalist(volumes, "testing")
    with pytest.raises(ValueError, match="roi_size must have 3"):
        SegmentationDataModule(str(volumes), roi_size=(16, 16))
    with pytest.raises(ValueError, match="intensity_range"):
        SegmentationDataModule(str(volumes), intensity_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="axcodes needs 2"):
        SegmentationDataModule(str(volumes), spatial_dims=2, roi_size=(16, 16))
