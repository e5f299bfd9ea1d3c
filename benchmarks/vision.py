"""Forward throughput and peak memory: Vim-Ti vs timm DeiT-Ti, VMamba-T vs timm Swin-T.

Inference (``torch.inference_mode``), batch ``--batch`` (1 on CPU), random weights, at 224^2,
512^2 and 1024^2 (``--quick``: 224^2 and 512^2). Each (model, resolution) runs in a fresh
subprocess so that peak memory is its own: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the
growth of the process's peak resident set (``ru_maxrss``) during the forward passes, over the
resident set after building the model and one warm-up pass at 64^2 (so the weights and the
allocator's baseline are excluded). Throughput is images per second from the median of
``--repeats`` timed passes after one warm-up pass. The Vim paper's claim (GPU, 1248^2, batch
inference): 2.8x faster than DeiT-Ti and 86.8% less memory.

Usage: ``ssmkit bench vision [--quick] [--device cpu|cuda] [--repeats N]``. Writes
``benchmarks/results/vision.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ssmkit.core.files import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "vision.md"

PAIRS = [
    ("Vim-Ti", "vim_tiny_patch16_224", "DeiT-Ti", "deit_tiny_patch16_224"),
    ("VMamba-T", "vmamba_tiny", "Swin-T", "swin_tiny_patch4_window7_224"),
]

_CHILD = r"""
import json, resource, statistics, sys, time
import torch, timm
import ssmkit.vision  # registers vim_* / vmamba_* with timm
name, res, batch, repeats, device, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
torch.set_num_threads(threads)
kwargs = {} if name.startswith("vmamba") else {"img_size": res}
model = timm.create_model(name, num_classes=1000, **kwargs).to(device).eval()
small = 64 if name.startswith("vmamba") else None
def sync():
    if device == "cuda":
        torch.cuda.synchronize()
with torch.inference_mode():
    if small:
        model(torch.randn(1, 3, small, small, device=device))
    x = torch.randn(batch, 3, res, res, device=device)
    sync()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    model(x)  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - start)
peak = (torch.cuda.max_memory_allocated() - base_cuda) if device == "cuda" else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
print(json.dumps({"sec": statistics.median(times), "peak_mb": peak / 2**20, "params": sum(p.numel() for p in model.parameters())}))
"""


def measure(name: str, res: int, args: argparse.Namespace) -> dict[str, float] | None:
    cmd = [sys.executable, "-c", _CHILD, name, str(res), str(args.batch), str(args.repeats)]
    cmd += [args.device, str(args.threads)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if result.returncode != 0:
        print(f"{name} @ {res}: failed\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="224^2 and 512^2 only")
    parser.add_argument("--resolutions", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="1: OpenMP spin-waits on a busy CPU")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    resolutions = args.resolutions or ([224, 512] if args.quick else [224, 512, 1024])
    rows = []
    for ours, ours_name, peer, peer_name in PAIRS:
        for res in resolutions:
            a = measure(ours_name, res, args)
            b = measure(peer_name, res, args)
            if a is None or b is None:
                rows.append(f"| {ours} vs {peer} | {res}^2 | failed (see stderr) | | | | | |")
                continue
            ips_a, ips_b = args.batch / a["sec"], args.batch / b["sec"]
            rows.append(
                f"| {ours} vs {peer} | {res}^2 | {ips_a:.2f} | {ips_b:.2f} | {ips_a / ips_b:.2f}x "
                f"| {a['peak_mb']:.0f} | {b['peak_mb']:.0f} | "
                f"{100 * (1 - a['peak_mb'] / max(b['peak_mb'], 1e-9)):+.0f}% |"
            )
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# vision: forward throughput and peak memory",
            "",
            f"`ssmkit bench vision{' --quick' if args.quick else ''}`: device {args.device}"
            f"{f' ({args.threads} threads)' if args.device == 'cpu' else ''}, batch {args.batch}, "
            f"inference, median of {args.repeats} passes after a warm-up, random weights, "
            "1000-class heads. Peak memory: activations only (CUDA: max allocated; CPU: growth of "
            "peak RSS). Memory saving = 1 - ours/peer.",
            "",
            "| pair | input | ours img/s | peer img/s | speed-up | ours peak MB | peer peak MB "
            "| memory saving |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_text_atomic(args.out, text)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
