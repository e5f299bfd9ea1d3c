"""Optional third-party packages, imported only when a feature that needs them is used."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(package: str, extra: str) -> ModuleType:
    """Import ``package`` or explain which ssmkit extra provides it.

    Args:
        package: importable module name, e.g. ``"timm"`` or ``"pytorch_forecasting"``.
        extra: the ssmkit extra that installs it, e.g. ``"vision"``.

    Raises:
        ImportError: naming the missing package and the ``pip install "ssmkit[extra]"`` fix.
    """
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(
            f"This feature needs the package `{package}`, which is not installed "
            f'({error}). Install it with: pip install "ssmkit[{extra}]"'
        ) from error
