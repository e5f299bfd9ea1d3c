"""ssmkit.rl: SSM world models for gymnasium agents.

Environment pieces (``TMaze``, ``make_env``, wrappers, ``SequenceReplay``, ``VectorCollector``)
need the ``rl`` extra (gymnasium, popgym) and are imported on first use.
"""

if __name__ != "ssmkit.rl":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.rl`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.rl` instead."
    )

import importlib
from typing import Any

import ssmkit.rl.models  # noqa: F401  (registers rl.world_model_*; needs only torch)

_LAZY = {
    "TMaze": "ssmkit.rl.envs",
    "MaskedCartPole": "ssmkit.rl.envs",
    "PixelTMaze": "ssmkit.rl.envs",
    "ImageObservation": "ssmkit.rl.wrappers",
    "register_envs": "ssmkit.rl.envs",
    "make_env": "ssmkit.rl.wrappers",
    "OneHotObservation": "ssmkit.rl.wrappers",
    "ActionRepeat": "ssmkit.rl.wrappers",
    "SequenceReplay": "ssmkit.rl.replay",
    "SSMWorldModel": "ssmkit.rl.world_model",
    "WorldModelState": "ssmkit.rl.world_model",
    "DreamerAgent": "ssmkit.rl.agent",
    "RLConfig": "ssmkit.rl.train",
    "Trainer": "ssmkit.rl.train",
    "VectorCollector": "ssmkit.rl.replay",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssmkit.rl' has no attribute {name!r}")
