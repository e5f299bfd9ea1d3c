"""RMSNorm (every Mamba block's norm): the composite torch formula vs the native op.

Per call, median of ``--repeats`` wall times after three warm-up calls: forward, and
forward+backward (gradients for x and weight), fp32 on CPU, eps = 1e-5, on ``--threads``
threads (default 1).
Old: ``x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w`` (what ``core.norms``
ran); new: ``rms_norm(x, w, eps)`` (the C kernel). Shapes: (8200, 64) and (8000, 64) are the
(B L, D) norms of DPMamba / Mamba-TasNet training steps, (16, 197, 192) a ViM-tiny batch.

    ssmkit bench rms_norm [--quick] [--repeats 50] [--threads 1]
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

from ssmkit.core.files import write_text_atomic
from ssmkit.core.ops import rms_norm

RESULTS = Path(__file__).resolve().parent / "results" / "rms_norm.md"
SHAPES = ((8200, 64), (8000, 64), (16, 197, 192))
EPS = 1e-5


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after three warm-up calls."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for _ in range(3):
        timed()
    return statistics.median(timed() for _ in range(repeats))


def old(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + EPS) * w


def new(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return rms_norm(x, w, EPS, backend="cpu")


def measure(shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(shape[-1], requires_grad=True)
    dy = torch.randn(*shape)
    assert torch.allclose(new(x, w), old(x, w), atol=1e-5, rtol=1e-5), "native differs"
    times = {}
    for label, fn in (("old", old), ("new", new)):
        with torch.no_grad():
            times[f"{label} fwd"] = median_time(lambda f=fn: f(x, w), repeats)

        def both(f: Callable[..., torch.Tensor] = fn) -> None:
            torch.autograd.grad(f(x, w), (x, w), dy)

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
        "| shape | old fwd ms | new fwd ms | speed-up | old fwd+bwd ms | new fwd+bwd ms | "
        "speed-up |",
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
        f"# rms_norm: per call, fp32, {args.threads} thread(s), median of {repeats}\n\n"
        f"`ssmkit bench rms_norm` on {cpu}, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.2f} (2 cores).\n\n"
    )
    text = header + "\n".join(rows) + "\n"
    print(text)
    if not args.quick:
        write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
