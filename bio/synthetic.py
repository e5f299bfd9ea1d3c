"""Synthetic segmentation data (MONAI's random spheres/circles) written as NIfTI + a datalist.

For tests, benchmarks and the quickstart: no download needed. Needs the ``bio`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssmkit.core.files import write_text_atomic
from ssmkit.core.optional import require


def synthetic_case(
    shape: Sequence[int],
    num_objs: int = 6,
    num_seg_classes: int = 1,
    noise_max: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One image and label map (both of ``shape``, 2-D or 3-D) with random objects and noise.

    Labels are 0 (background) .. num_seg_classes; radii scale with the smallest side.
    """
    data = require("monai.data", "bio")
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 sizes, got {tuple(shape)}.")
    side = min(shape)
    rad_max, rad_min = max(3, side // 6), max(2, side // 16)
    state = np.random.RandomState(seed)
    kwargs = dict(
        num_objs=num_objs,
        rad_max=rad_max,
        rad_min=rad_min,
        noise_max=noise_max,
        num_seg_classes=num_seg_classes,
        random_state=state,
    )
    if len(shape) == 3:
        image, label = data.create_test_image_3d(*shape, **kwargs)
    else:
        image, label = data.create_test_image_2d(*shape, **kwargs)
    return image.astype(np.float32), label.astype(np.uint8)


def write_synthetic_dataset(
    folder: str | Path,
    n_train: int = 4,
    n_val: int = 1,
    shape: Sequence[int] = (64, 64, 64),
    num_seg_classes: int = 1,
    noise_max: float = 0.3,
    seed: int = 0,
) -> Path:
    """Write ``imagesTr/``, ``labelsTr/`` NIfTI files and ``dataset.json``; returns the JSON path.

    The JSON has "training" and "validation" lists and a "test" list (the validation images).
    2-D cases are stored as (H, W, 1) volumes with an identity affine.
    """
    nib = require("nibabel", "bio")
    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    entries = []
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    for i in range(n_train + n_val):
        image, label = synthetic_case(
            shape, num_seg_classes=num_seg_classes, noise_max=noise_max, seed=seed + i
        )
        if image.ndim == 2:
            image, label = image[..., None], label[..., None]
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(folder / "imagesTr" / name))
        nib.save(nib.Nifti1Image(label, affine), str(folder / "labelsTr" / name))
        entries.append({"image": f"imagesTr/{name}", "label": f"labelsTr/{name}"})
    datalist = {
        "name": "ssmkit-synthetic",
        "labels": {str(k): f"class_{k}" for k in range(num_seg_classes + 1)},
        "training": entries[:n_train],
        "validation": entries[n_train:],
        "test": [e["image"] for e in entries[n_train:]],
    }
    path = folder / "dataset.json"
    return write_text_atomic(path, json.dumps(datalist, indent=2))
