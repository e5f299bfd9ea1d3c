"""The small native CPU ops around every Mamba scan against the torch code they replace.

Per call, fp32 on CPU, ``--threads`` threads (default 1), median of ``--repeats`` wall times
after three warm-up calls: forward (no grad) and forward+backward (gradients of every input).

- ``depthwise_causal_conv1d`` (K = 4, fused SiLU) against ``F.silu(F.conv1d(x, w, b,
  padding=K-1, groups=C)[..., :L])`` (what ``causal_conv1d`` ran). Shapes (B, C, L): (164, 64, 50)
  and (200, 64, 41) are DPMamba's intra-/inter-chunk calls, (8, 128, 1000) a long one.
- ``rms_norm`` against the composite torch formula ``x * rsqrt(mean(x^2, -1) + eps) * w`` (what
  ``core.norms.rms_norm`` ran). Shapes: (8200, 64) and (8000, 64) are DPMamba's and
  Mamba-TasNet's residual norms, (16, 197, 192) Vim-Ti's.

    ssmkit bench native_ops [--quick] [--repeats 50] [--threads 1]
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
from ssmkit.core.ops import depthwise_causal_conv1d, rms_norm

RESULTS = Path(__file__).resolve().parent / "results" / "native_ops.md"
K = 4
Inputs = Callable[[tuple[int, ...]], list[torch.Tensor]]
Op = Callable[..., torch.Tensor]


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after three warm-up calls."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for _ in range(3):
        timed()
    return statistics.median(timed() for _ in range(repeats))


def conv_inputs(shape: tuple[int, ...]) -> list[torch.Tensor]:
    return [torch.randn(*shape), torch.randn(shape[1], 1, K), torch.randn(shape[1])]


def conv_old(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.silu(F.conv1d(x, w, b, padding=K - 1, groups=x.shape[1])[..., : x.shape[-1]])


def conv_new(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return depthwise_causal_conv1d(x, w, b, activation="silu", backend="cpu")


def norm_inputs(shape: tuple[int, ...]) -> list[torch.Tensor]:
    return [torch.randn(*shape), torch.randn(shape[-1])]


def norm_old(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + 1e-5) * w


def norm_new(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return rms_norm(x, w, 1e-5, backend="cpu")


# (section title, shapes, inputs, old, new)
OPS: tuple[tuple[str, tuple[tuple[int, ...], ...], Inputs, Op, Op], ...] = (
    (
        f"depthwise_causal_conv1d, K={K}, fused SiLU",
        ((164, 64, 50), (200, 64, 41), (8, 128, 1000)),
        conv_inputs,
        conv_old,
        conv_new,
    ),
    ("rms_norm", ((8200, 64), (8000, 64), (16, 197, 192)), norm_inputs, norm_old, norm_new),
)


def measure(shape: tuple[int, ...], inputs: Inputs, old: Op, new: Op, repeats: int) -> list[float]:
    """``[old fwd, new fwd, old fwd+bwd, new fwd+bwd]`` in ms (after checking new == old)."""
    torch.manual_seed(0)
    args = [t.requires_grad_() for t in inputs(shape)]
    ref = old(*args)
    assert torch.allclose(new(*args), ref, atol=1e-5, rtol=1e-5), "native differs"
    dy = torch.randn_like(ref)
    forward, both = [], []
    for fn in (old, new):
        with torch.no_grad():
            forward.append(median_time(lambda f=fn: f(*args), repeats) * 1e3)
        both.append(
            median_time(lambda f=fn: torch.autograd.grad(f(*args), args, dy), repeats) * 1e3
        )
    return forward + both


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats, no results file")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else args.repeats
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# Native CPU ops per call: fp32, {args.threads} thread(s), median of {repeats}",
        "",
        f"`ssmkit bench native_ops` on {cpu}, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores). Old: the torch code each op replaced.",
    ]
    for title, shapes, inputs, old, new in OPS:
        lines += [
            "",
            f"## {title}",
            "",
            "| shape | old fwd ms | new fwd ms | speed-up | old fwd+bwd ms | new fwd+bwd ms | "
            "speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for shape in shapes:
            of, nf, ob, nb = measure(shape, inputs, old, new, repeats)
            lines.append(
                f"| {shape} | {of:.3f} | {nf:.3f} | {of / nf:.1f}x | {ob:.3f} | {nb:.3f} | "
                f"{ob / nb:.1f}x |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
