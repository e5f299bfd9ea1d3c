"""Time-Series-Library's ``timeF`` calendar features, each scaled to [-0.5, 0.5].

The feature set per frequency follows TSLib (and GluonTS before it): hourly data get
hour-of-day, day-of-week, day-of-month and day-of-year; minute data add minute-of-hour first.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# Canonical unit -> the features TSLib computes for it, in TSLib's order.
_FEATURES: dict[str, tuple[str, ...]] = {
    "Y": (),
    "Q": ("month_of_year",),
    "M": ("month_of_year",),
    "W": ("day_of_month", "week_of_year"),
    "D": ("day_of_week", "day_of_month", "day_of_year"),
    "B": ("day_of_week", "day_of_month", "day_of_year"),
    "H": ("hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "T": ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "S": (
        "second_of_minute",
        "minute_of_hour",
        "hour_of_day",
        "day_of_week",
        "day_of_month",
        "day_of_year",
    ),
}

_ALIASES = {
    "s": "S",
    "sec": "S",
    "second": "S",
    "t": "T",
    "min": "T",
    "minute": "T",
    "h": "H",
    "hour": "H",
    "d": "D",
    "day": "D",
    "b": "B",
    "w": "W",
    "week": "W",
    "m": "M",
    "ms": "M",
    "me": "M",
    "month": "M",
    "q": "Q",
    "qs": "Q",
    "qe": "Q",
    "quarter": "Q",
    "y": "Y",
    "a": "Y",
    "ys": "Y",
    "ye": "Y",
    "year": "Y",
}

# Canonical unit -> a pandas frequency alias for generating future timestamps.
PANDAS_FREQ = {
    "S": "s",
    "T": "min",
    "H": "h",
    "D": "D",
    "B": "B",
    "W": "W",
    "M": "MS",
    "Q": "QS",
    "Y": "YS",
}


def parse_freq(freq: str) -> tuple[int, str]:
    """Split a frequency such as ``"h"``, ``"15min"``, ``"t"``, ``"QS-OCT"`` into (multiple, unit).

    Raises:
        ValueError: an unknown frequency, listing the accepted ones.
    """
    match = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)(?:-[A-Za-z]+)?\s*", str(freq))
    unit = _ALIASES.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(
            f"freq={freq!r} is not a known frequency; expected one of "
            "'s', 't'/'min', 'h', 'd', 'b', 'w', 'm', 'q', 'y' (optionally with a multiple, "
            "e.g. '15min')."
        )
    return int(match.group(1) or 1), unit


def n_time_features(freq: str) -> int:
    """Number of ``timeF`` features for ``freq`` (4 for hourly data)."""
    return len(_FEATURES[parse_freq(freq)[1]])


def time_features(dates: Any, freq: str) -> np.ndarray:
    """TSLib ``timeF`` features.

    Args:
        dates: a pandas ``DatetimeIndex`` (or anything ``pd.DatetimeIndex`` accepts) of length L.
        freq: the data frequency (``"h"``, ``"t"``, ``"d"``, ...).

    Returns:
        float32 array (L, F) with values in [-0.5, 0.5]; F = :func:`n_time_features`.
    """
    import pandas as pd

    index = pd.DatetimeIndex(dates)
    columns = {
        "second_of_minute": index.second / 59.0 - 0.5,
        "minute_of_hour": index.minute / 59.0 - 0.5,
        "hour_of_day": index.hour / 23.0 - 0.5,
        "day_of_week": index.dayofweek / 6.0 - 0.5,
        "day_of_month": (index.day - 1) / 30.0 - 0.5,
        "day_of_year": (index.dayofyear - 1) / 365.0 - 0.5,
        "month_of_year": (index.month - 1) / 11.0 - 0.5,
        "week_of_year": (index.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5,
    }
    names = _FEATURES[parse_freq(freq)[1]]
    if not names:
        return np.zeros((len(index), 0), dtype=np.float32)
    return np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], 1).astype(np.float32)
