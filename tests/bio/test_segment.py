"""``ssmkit segment``: a trained checkpoint segments a real NIfTI, keeping shape and affine."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nibabel", reason="the bio extra (nibabel) is not installed")
pytest.importorskip("monai", reason="the bio extra (MONAI) is not installed")
pytest.importorskip("lightning", reason="the train extra (Lightning) is not installed")

import lightning
import nibabel as nib
from nibabel.testing import data_path

from ssmkit.__main__ import main as ssmkit_main
from ssmkit.bio.data import SegmentationDataModule
from ssmkit.bio.segment import default_output_path, segment_file
from ssmkit.bio.synthetic import write_synthetic_dataset
from ssmkit.bio.task import SegmentationTask

TINY = dict(
    channels=(4, 8, 16),
    strides=(1, 2, 2),
    n_conv_per_stage=1,
    n_conv_per_stage_decoder=1,
    d_state=4,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SegmentationTask fitted for two steps by Lightning on synthetic NIfTI volumes."""
    root = tmp_path_factory.mktemp("fit")
    datalist = write_synthetic_dataset(root / "data", n_train=2, n_val=1, shape=(24, 24, 16))
    dm = SegmentationDataModule(
        str(datalist), roi_size=(16, 16, 16), num_samples=1, batch_size=1, pixdim=None
    )
    task = SegmentationTask(
        "bio.umamba_bot",
        dict(spatial_dims=3, **TINY),
        roi_size=(16, 16, 16),
        sw_batch_size=16,
        overlap=0.0,
    )
    trainer = lightning.Trainer(
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(task, dm)
    assert 0.0 <= float(trainer.callback_metrics["val_dice"]) <= 1.0
    path = root / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def anatomical(tmp_path: Path) -> Path:
    """nibabel's example anatomical MRI (33 x 41 x 25, int16, oblique-free affine), copied."""
    path = tmp_path / "anat.nii"
    shutil.copy(Path(data_path) / "anatomical.nii", path)
    return path


def test_segment_real_nifti_keeps_shape_and_affine(checkpoint: Path, anatomical: Path) -> None:
    before = anatomical.read_bytes()
    out = segment_file(anatomical, checkpoint)
    assert out == anatomical.with_name("anat_seg.nii.gz") and out.is_file()
    assert anatomical.read_bytes() == before  # the input is untouched
    image, seg = nib.load(str(anatomical)), nib.load(str(out))
    assert seg.shape == image.shape
    np.testing.assert_allclose(seg.affine, image.affine)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    assert not list(anatomical.parent.glob(".*tmp*"))  # the atomic write left no temp file


def test_orientation_round_trip(checkpoint: Path, tmp_path: Path) -> None:
    """A flipped copy of the image (same world data, LAS voxel order) gives the flipped labels."""
    image = nib.load(str(Path(data_path) / "anatomical.nii"))
    data = np.asarray(image.dataobj)[:20, :24, :16]
    ras = tmp_path / "ras.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(ras))
    flip = np.diag([-2.0, 2.0, 2.0, 1.0])
    flip[0, 3] = 2.0 * (data.shape[0] - 1)
    las = tmp_path / "las.nii.gz"
    nib.save(nib.Nifti1Image(data[::-1].astype(np.float32), flip), str(las))
    seg_ras = np.asarray(nib.load(str(segment_file(ras, checkpoint))).dataobj)
    seg_las = nib.load(str(segment_file(las, checkpoint)))
    np.testing.assert_allclose(seg_las.affine, flip)
    np.testing.assert_array_equal(np.asarray(seg_las.dataobj)[::-1], seg_ras)


def test_cli_writes_beside_input_and_refuses_to_overwrite(
    checkpoint: Path, anatomical: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ssmkit_main(["segment", str(anatomical), "--checkpoint", str(checkpoint)]) == 0
    out = default_output_path(anatomical)
    assert str(out) in capsys.readouterr().out and out.is_file()
    with pytest.raises(FileExistsError, match="--overwrite"):
        ssmkit_main(["segment", str(anatomical), "--checkpoint", str(checkpoint)])
    assert (
        ssmkit_main(["segment", str(anatomical), "--checkpoint", str(checkpoint), "--overwrite"])
        == 0
    )


def test_bad_inputs_raise(checkpoint: Path, anatomical: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is the input image"):
        segment_file(anatomical, checkpoint, output=anatomical, overwrite=True)
    with pytest.raises(ValueError, match=r"\.nii or \.nii\.gz"):
        default_output_path(tmp_path / "scan.mha")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        segment_file(anatomical, tmp_path / "missing.ckpt")
    four_d = tmp_path / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16, 2), np.float32), np.eye(4)), str(four_d))
    with pytest.raises(ValueError, match="2 channel\\(s\\) but the model expects 1"):
        segment_file(four_d, checkpoint)
    assert torch.is_grad_enabled()  # inference left global autograd state alone
