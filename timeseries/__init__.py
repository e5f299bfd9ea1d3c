"""ssmkit.timeseries: S-Mamba and SpaceTime forecasting on any CSV.

Light to import (torch only): the models and their registry entries. The Lightning and
pytorch-forecasting pieces load on first use::

    from ssmkit.timeseries import CSVForecastDataModule, ForecastTask  # needs lightning, pandas
    from ssmkit.timeseries import SMambaForecaster  # needs pytorch-forecasting
"""

if __name__ != "ssmkit.timeseries":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.timeseries`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.timeseries` instead."
    )

import importlib
from typing import Any

import torch

from ssmkit.core.registry import register_model
from ssmkit.timeseries.dlinear import DLinear
from ssmkit.timeseries.revin import RevIN
from ssmkit.timeseries.smamba import SMamba
from ssmkit.timeseries.spacetime import SpaceTime

_LAZY = {
    "CSVForecastDataModule": "ssmkit.timeseries.data",
    "ForecastWindows": "ssmkit.timeseries.data",
    "read_forecast_csv": "ssmkit.timeseries.data",
    "ForecastTask": "ssmkit.timeseries.task",
    "SMambaForecaster": "ssmkit.timeseries.forecasting",
    "SpaceTimeForecaster": "ssmkit.timeseries.forecasting",
}

__all__ = ["DLinear", "RevIN", "SMamba", "SpaceTime", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssmkit.timeseries' has no attribute {name!r}")


def _series(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Example (x_enc (2, L, C), x_mark_enc (2, L, 4)) for a forecaster."""
    return torch.randn(2, model.seq_len, model.enc_in), torch.rand(2, model.seq_len, 4) - 0.5


_TINY = dict(seq_len=16, pred_len=8, enc_in=3)


@register_model(
    "timeseries.smamba",
    tiny=dict(_TINY, d_model=16, d_ff=16, e_layers=1),
    example_inputs=_series,
)
def smamba(**kwargs: Any) -> SMamba:
    """S-Mamba (Wang et al. 2024), ETTh1 settings: 2 layers, d_model = d_ff = 256, d_state 2."""
    return SMamba(**kwargs)


@register_model(
    "timeseries.spacetime",
    tiny=dict(_TINY, d_model=16, d_state=8),
    example_inputs=_series,
)
def spacetime(**kwargs: Any) -> SpaceTime:
    """SpaceTime (Zhang et al. 2023): companion SSMs, closed-loop decoder; width 128, d = 64."""
    return SpaceTime(**kwargs)


@register_model("timeseries.dlinear", tiny=dict(_TINY, moving_avg=5), example_inputs=_series)
def dlinear(**kwargs: Any) -> DLinear:
    """DLinear (Zeng et al. 2023): decomposition + linear maps; the linear floor."""
    return DLinear(**kwargs)
