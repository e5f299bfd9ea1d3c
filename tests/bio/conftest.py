"""bio tests run their tiny convolutions on one thread.

With two threads on shared cores, OpenMP spin-waiting costs far more CPU than the work itself
(a 40-step 2-D training loop took ~28 CPU-s on two threads and ~0.6 CPU-s on one).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
