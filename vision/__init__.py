"""ssmkit.vision: Vim and VMamba as timm backbones, image classification fine-tuning.

- Models: :class:`VisionMamba` (Vim, arXiv 2401.09417) and :class:`VMamba` (arXiv 2401.10166),
  registered in ssmkit's registry (``ssmkit.create_model("vision.vim_tiny")``) and, when timm is
  installed, in timm's: ``import ssmkit.vision`` then ``timm.create_model("vim_tiny_patch16_224")``
  (``register_timm()`` does the same explicitly, with a clear error when timm is missing).
- Checkpoints: :func:`checkpoint_filter_fn` converts the authors' Vim ``*-midclstok`` and VMamba v2
  state dicts.
- Fine-tuning (Lightning, imported lazily): ``ImageClassificationTask``, ``ImageFolderDataModule``,
  ``PredictionCSVWriter``.
"""

if __name__ != "ssmkit.vision":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.vision`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.vision` instead."
    )

import importlib
import importlib.util
from typing import Any

from ssmkit.core.optional import require
from ssmkit.vision.convert import checkpoint_filter_fn, vim_filter_fn, vmamba_filter_fn
from ssmkit.vision.layers import PatchEmbed, resample_pos_embed
from ssmkit.vision.vim import VisionMamba
from ssmkit.vision.vmamba import VMamba

_LAZY = {
    "ImageClassificationTask": "ssmkit.vision.task",
    "PredictionCSVWriter": "ssmkit.vision.task",
    "ImageFolderDataModule": "ssmkit.vision.data",
}

__all__ = [
    "ImageClassificationTask",
    "ImageFolderDataModule",
    "PatchEmbed",
    "PredictionCSVWriter",
    "VMamba",
    "VisionMamba",
    "checkpoint_filter_fn",
    "register_timm",
    "resample_pos_embed",
    "timm_available",
    "vim_filter_fn",
    "vmamba_filter_fn",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssmkit.vision' has no attribute {name!r}")


def timm_available() -> bool:
    """Whether timm can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("timm") is not None
    except (ImportError, ValueError):
        return False


def register_timm() -> None:
    """Register the Vim / VMamba names in timm's registry (done on import when timm is present).

    Raises:
        ImportError: timm is not installed, naming the ``ssmkit[vision]`` extra.
    """
    require("timm", "vision")
    importlib.import_module("ssmkit.vision.timm_models")


if timm_available():
    register_timm()
