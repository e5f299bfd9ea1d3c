"""Regression: 2-D U-Mamba_Enc backward aborted with heap corruption (oneDNN conv backward on a
channels-last view coming out of a Mamba layer, torch 2.14.1 CPU). Run in a subprocess so that an
abort fails this test instead of killing the test session."""

from __future__ import annotations

import subprocess
import sys

import torch

from ssmkit.bio.blocks import MambaLayer

_REPRO = """
import torch
torch.set_num_threads(1)
from ssmkit.bio import UMambaEnc
torch.manual_seed(0)
net = UMambaEnc(2, 1, 2, channels=(8, 16, 32, 64, 128), strides=(1, 2, 2, 2, 2))
net(torch.randn(2, 1, 64, 64)).sum().backward()
print("backward ok")
"""


def test_mamba_layer_returns_contiguous_maps() -> None:
    layer = MambaLayer(channels=4, d_state=4)
    assert layer(torch.randn(1, 4, 5, 6)).is_contiguous()


def test_umamba_enc_2d_backward_does_not_corrupt_the_heap() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _REPRO], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "backward ok" in result.stdout, result.stderr[-2000:]
