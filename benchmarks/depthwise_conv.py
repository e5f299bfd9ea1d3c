"""Depthwise causal Conv1d + SiLU (Mamba's short conv): ``F.conv1d`` + ``F.silu`` vs the native op.

Per call, median of ``--repeats`` wall times after three warm-up calls: forward, and
forward+backward (gradients for x, weight and bias), fp32 on CPU, K = 4, on ``--threads``
threads (default 1).
Old: ``F.silu(F.conv1d(x, w, b, padding=K-1, groups=C)[..., :L])`` (what ``causal_conv1d`` ran);
new: ``depthwise_causal_conv1d(x, w, b, activation="silu")`` (the C kernel). Shapes (B, C, L):
(164, 64, 50) and (200, 64, 41) are DPMamba's intra/inter-chunk calls, (8, 128, 1000) a long one.

    ssmkit bench depthwise_conv [--quick] [--repeats 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmkit.core.files import write_text_atomic
from ssmkit.core.ops import depthwise_causal_conv1d

RESULTS = Path(__file__).resolve().parent / "results" / "depthwise_conv.md"
SHAPES = ((164, 64, 50), (200, 64, 41), (8, 128, 1000))
K = 4


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after three warm-up calls."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for _ in range(3):
        timed()
    return statistics.median(timed() for _ in range(repeats))


def old(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    length = x.shape[-1]
    return F.silu(F.conv1d(x, w, b, padding=K - 1, groups=x.shape[1])[..., :length])


def new(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return depthwise_causal_conv1d(x, w, b, activation="silu", backend="cpu")


def measure(shape: tuple[int, int, int], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(shape[1], 1, K, requires_grad=True)
    b = torch.randn(shape[1], requires_grad=True)
    dy = torch.randn(*shape)
    ref = old(x, w, b)
    assert torch.allclose(new(x, w, b), ref, atol=1e-5, rtol=1e-5), "native differs"
    times = {}
    for label, fn in (("old", old), ("new", new)):
        with torch.no_grad():
            times[f"{label} fwd"] = median_time(lambda f=fn: f(x, w, b), repeats)

        def both(f: Callable[..., torch.Tensor] = fn) -> None:
            torch.autograd.grad(f(x, w, b), (x, w, b), dy)

        times[f"{label} fwd+bwd"] = median_time(both, repeats)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats, no results file")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else args.repeats
    rows = [
        "| shape (B, C, L) | old fwd ms | new fwd ms | speed-up | old fwd+bwd ms | "
        "new fwd+bwd ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in SHAPES:
        t = {k: v * 1e3 for k, v in measure(shape, repeats).items()}
        rows.append(
            f"| {shape} | {t['old fwd']:.3f} | {t['new fwd']:.3f} | "
            f"{t['old fwd'] / t['new fwd']:.1f}x | {t['old fwd+bwd']:.3f} | "
            f"{t['new fwd+bwd']:.3f} | {t['old fwd+bwd'] / t['new fwd+bwd']:.1f}x |"
        )
    cpu = platform.processor() or platform.machine()
    header = (
        f"# depthwise_conv: conv + SiLU per call, K={K}, fp32, {args.threads} thread(s), "
        f"median of {repeats}\n\n`ssmkit bench depthwise_conv` on {cpu}, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} (2 cores).\n\n"
    )
    text = header + "\n".join(rows) + "\n"
    print(text)
    if not args.quick:
        write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
