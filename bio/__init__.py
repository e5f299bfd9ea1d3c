"""ssmkit.bio: Mamba medical segmentation on MONAI.

Networks (torch only at import; SegMamba's decoder needs MONAI when built): :class:`UMambaBot`,
:class:`UMambaEnc`, :class:`SegMamba`, :class:`NNMamba`, registered as ``bio.umamba_bot``,
``bio.umamba_enc``, ``bio.segmamba``, ``bio.nnmamba``. Training pieces (``SegmentationDataModule``, ``SegmentationTask``) need the
``bio`` and ``train`` extras (MONAI, nibabel, Lightning) and are imported on first use, as is
``segment_file`` behind ``ssmkit segment``.
"""

if __name__ != "ssmkit.bio":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.bio`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.bio` instead."
    )

import importlib
from typing import Any

from ssmkit.bio.blocks import MambaLayer
from ssmkit.bio.nnmamba import FlipMambaLayer, NNMamba
from ssmkit.bio.segmamba import GatedSpatialConv, SegMamba, ToMLayer
from ssmkit.bio.umamba import UMambaBot, UMambaEnc

_LAZY = {
    "SegmentationDataModule": "ssmkit.bio.data",
    "SegmentationTask": "ssmkit.bio.task",
    "segment_file": "ssmkit.bio.segment",
}

__all__ = [
    "FlipMambaLayer",
    "GatedSpatialConv",
    "MambaLayer",
    "NNMamba",
    "SegMamba",
    "SegmentationDataModule",
    "SegmentationTask",
    "ToMLayer",
    "UMambaBot",
    "UMambaEnc",
    "segment_file",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssmkit.bio' has no attribute {name!r}")
