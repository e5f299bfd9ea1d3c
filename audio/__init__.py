"""ssmkit.audio: speech separation with SSMs (Mamba-TasNet, DPMamba, SPMamba).

Models register themselves on import (``audio.mamba_tasnet_xs|s|m|l``, ``audio.dpmamba_xs|s|m|l``,
``audio.spmamba``, ``audio.conv_tasnet``). The Lightning pieces (:class:`SeparationTask`,
:class:`MixtureDataModule`) load lazily, so ``import ssmkit.audio`` needs only torch.
"""

if __name__ != "ssmkit.audio":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.audio`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.audio` instead."
    )

import importlib
from typing import Any

from ssmkit.audio.baselines import ConvTasNet
from ssmkit.audio.dpmamba import DPMamba
from ssmkit.audio.mamba_tasnet import MambaTasNet
from ssmkit.audio.metrics import pit_si_snr, sdr_improvement, si_snr, si_snr_improvement
from ssmkit.audio.spmamba import SPMamba

_LAZY = {"SeparationTask": "ssmkit.audio.task", "MixtureDataModule": "ssmkit.audio.data"}

__all__ = [
    "ConvTasNet",
    "DPMamba",
    "MambaTasNet",
    "MixtureDataModule",
    "SPMamba",
    "SeparationTask",
    "pit_si_snr",
    "sdr_improvement",
    "si_snr",
    "si_snr_improvement",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssmkit.audio' has no attribute {name!r}")
