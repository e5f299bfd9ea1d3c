"""ssmkit: state-space models that install everywhere and run fast on CPU and GPU.

The registry is re-exported lazily so that ``import ssmkit`` needs only torch and einops::

    import ssmkit
    model = ssmkit.create_model("core.mamba", d_model=64)
    ssmkit.list_models(domain="timeseries")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "ssmkit.core.registry",
    "list_models": "ssmkit.core.registry",
    "register_model": "ssmkit.core.registry",
    "model_entry": "ssmkit.core.registry",
}

__all__ = ["__version__", "create_model", "list_models", "model_entry", "register_model"]

if TYPE_CHECKING:
    from ssmkit.core.registry import create_model, list_models, model_entry, register_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssmkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
