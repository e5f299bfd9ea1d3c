"""``ssmkit segment image.nii.gz --checkpoint model.ckpt``: write ``image_seg.nii.gz`` beside it.

The image is read with nibabel, reoriented to the orientation the model was trained in (the
task's ``axcodes``), normalised as in training (the task's ``intensity_range``), segmented with
sliding-window inference on its native voxel grid, reoriented back and saved with the input's
affine, so the label map overlays the image voxel for voxel. Needs the ``bio`` and ``train``
extras.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ssmkit.core.files import atomic_output
from ssmkit.core.optional import require

_SUFFIXES = (".nii.gz", ".nii")


def default_output_path(image: str | Path) -> Path:
    """``dir/case.nii.gz`` -> ``dir/case_seg.nii.gz`` (also for ``.nii`` inputs)."""
    image = Path(image)
    for suffix in _SUFFIXES:
        if image.name.endswith(suffix):
            return image.with_name(image.name[: -len(suffix)] + "_seg.nii.gz")
    raise ValueError(f"expected a NIfTI file ending in .nii or .nii.gz, got {image}.")


def load_task(checkpoint: str | Path, device: str = "cpu") -> Any:
    """A :class:`~ssmkit.bio.task.SegmentationTask` from a Lightning checkpoint, in eval mode."""
    from ssmkit.bio.task import SegmentationTask

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    task = SegmentationTask.load_from_checkpoint(checkpoint, map_location=device)
    return task.eval()


def _normalise(x: torch.Tensor, intensity_range: Any) -> torch.Tensor:
    """x (C, *S) float32, as the data module's ScaleIntensityRanged / NormalizeIntensityd."""
    if intensity_range is not None:
        low, high = (float(v) for v in intensity_range)
        return ((x - low) / (high - low)).clamp(0.0, 1.0)
    out = x.clone()
    for c in range(x.shape[0]):
        mask = x[c] != 0
        if mask.any():
            values = x[c][mask]
            std = values.std(unbiased=False)
            out[c][mask] = (values - values.mean()) / (std if std > 0 else 1.0)
    return out


@torch.no_grad()
def segment_array(task: Any, image: torch.Tensor) -> torch.Tensor:
    """Label map (*S) int64 of one normalised image (C, *S) with sliding-window inference."""
    device = next(task.parameters()).device
    logits = task.sliding_window(image[None].to(device))
    return logits.argmax(dim=1)[0].cpu()


def segment_file(
    image: str | Path,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
    *,
    task: Any = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> Path:
    """Segment one NIfTI file and write the label map with the input's affine.

    Args:
        image: path of a NIfTI image: (X, Y, Z) or (X, Y, Z, C) for 3-D networks, (X, Y) or
            (X, Y, 1) for 2-D networks.
        checkpoint: Lightning checkpoint of a SegmentationTask (or pass ``task``).
        output: where to write (default ``<image>_seg.nii.gz`` beside the input).
        task: an already loaded SegmentationTask (skips loading ``checkpoint``).
        device: "cpu" or "cuda".
        overwrite: replace an existing output file (never the input).

    Returns:
        The written path. The file is uint8 (int16 with more than 255 classes) with the same shape
        and affine as the input (without the channel axis).
    """
    nib = require("nibabel", "bio")
    from nibabel import orientations

    image = Path(image)
    if not image.is_file():
        raise FileNotFoundError(f"image not found: {image}")
    out_path = Path(output) if output is not None else default_output_path(image)
    if not out_path.name.endswith(_SUFFIXES):
        raise ValueError(f"output must end in .nii or .nii.gz, got {out_path}.")
    if out_path.resolve() == image.resolve():
        raise ValueError(f"output {out_path} is the input image; choose another output path.")
    if out_path.exists() and not overwrite:
        raise FileExistsError(
            f"{out_path} exists; pass overwrite=True (--overwrite) to replace it."
        )
    if task is None:
        if checkpoint is None:
            raise ValueError("segment_file needs a checkpoint path or a loaded task.")
        task = load_task(checkpoint, device)

    img = nib.load(str(image))
    data = torch.as_tensor(img.get_fdata(dtype="float32"))
    dims = task.spatial_dims
    if dims == 2 and data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim == dims:
        data = data[None]
    elif data.ndim == dims + 1:
        data = data.movedim(-1, 0)  # a 4-D NIfTI stores modalities on the last axis
    else:
        raise ValueError(
            f"{image} has shape {tuple(img.shape)}; a {dims}-D network needs {dims} spatial axes "
            "(plus an optional trailing channel axis)."
        )
    if task.in_channels is not None and data.shape[0] != task.in_channels:
        raise ValueError(
            f"{image} has {data.shape[0]} channel(s) but the model expects {task.in_channels}."
        )

    axcodes = task.hparams.get("axcodes")
    to_model = from_model = None
    if dims == 3 and axcodes:
        native = orientations.io_orientation(img.affine)
        target = orientations.axcodes2ornt(tuple(axcodes))
        to_model = orientations.ornt_transform(native, target)
        from_model = orientations.ornt_transform(target, native)
        data = torch.stack(
            [
                torch.as_tensor(orientations.apply_orientation(c.numpy(), to_model).copy())
                for c in data
            ]
        )
    data = _normalise(data, task.hparams.get("intensity_range"))
    labels = segment_array(task, data).numpy()
    if from_model is not None:
        labels = orientations.apply_orientation(labels, from_model)
    if dims == 2 and len(img.shape) == 3:
        labels = labels[..., None]
    dtype = "uint8" if labels.max(initial=0) < 256 else "int16"
    out_cls = nib.Nifti2Image if isinstance(img, nib.Nifti2Image) else nib.Nifti1Image
    seg = out_cls(labels.astype(dtype), img.affine)
    seg.header.set_xyzt_units(*img.header.get_xyzt_units()[:2])
    seg.set_qform(img.affine, code=int(img.header["qform_code"]) or 1)
    seg.set_sform(img.affine, code=int(img.header["sform_code"]) or 1)

    with atomic_output(out_path) as tmp:
        nib.save(seg, str(tmp))
    return out_path


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssmkit segment``."""
    parser = argparse.ArgumentParser(
        prog="ssmkit segment",
        description="Segment NIfTI images with a trained SegmentationTask checkpoint; writes "
        "<image>_seg.nii.gz beside each input with the input's affine.",
    )
    parser.add_argument("images", nargs="+", help="NIfTI files (.nii or .nii.gz)")
    parser.add_argument("--checkpoint", required=True, help="Lightning .ckpt of a SegmentationTask")
    parser.add_argument("--output", help="output path (only with a single image)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    if args.output and len(args.images) > 1:
        parser.error("--output names one file; drop it to write <image>_seg.nii.gz for each input.")
    task = load_task(args.checkpoint, args.device)
    for image in args.images:
        path = segment_file(
            image, output=args.output, task=task, device=args.device, overwrite=args.overwrite
        )
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
