"""Segmentation benchmark: U-Mamba Bot/Enc, SegMamba and nnMamba vs MONAI UNet and SwinUNETR, same run.

Two parts, every network built at the same base width ``--width`` (UNet/U-Mamba channels w..16w,
SegMamba feature sizes w..8w with hidden 16w, nnMamba stem w and stages 2w..8w; SwinUNETR feature_size 24, its smallest standard
size, or 12 when w < 16):

1. Accuracy at an equal budget: each network trains for the same seconds (AdamW 1e-3,
   DiceCE, random flips, batch 2) on MONAI ``create_test_image_3d`` volumes (several spheres,
   noise) and on a 2-D set (``create_test_image_2d``), then foreground Dice on held-out cases.
   On CPU the budget is process CPU time with one thread (the cores are often shared, and wall
   time would measure the neighbours); on CUDA it is wall time.
2. Cost: time per training step (forward + backward + AdamW, batch 1, median of repeats) and peak
   memory of a training step and of inference at 64^3 and 128^3. On CUDA peak memory is
   ``torch.cuda.max_memory_allocated``; on CPU it is the peak-RSS growth of a fresh subprocess.

    ssmkit bench segmentation [--quick] [--device cpu|cuda] [--budget 60] [--eval-at 20 40] [--width 16]
                              [--sizes 64 128] [--out benchmarks/results/segmentation.md]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ssmkit.bio import NNMamba, SegMamba, UMambaBot, UMambaEnc
from ssmkit.core.files import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "segmentation.md"
MODELS_3D = ("unet", "swinunetr", "umamba_bot", "umamba_enc", "segmamba", "nnmamba")
MODELS_2D = ("unet", "swinunetr", "umamba_bot", "umamba_enc", "nnmamba")


def build(name: str, spatial_dims: int, width: int) -> torch.nn.Module:
    """One of the compared networks, 1 input channel, 2 classes."""
    from monai.networks.nets import SwinUNETR, UNet

    widths = [width * 2**i for i in range(5)]
    if name == "unet":
        return UNet(
            spatial_dims,
            1,
            2,
            channels=widths,
            strides=(2, 2, 2, 2),
            num_res_units=2,
            norm="instance",
        )
    if name == "swinunetr":
        return SwinUNETR(
            in_channels=1,
            out_channels=2,
            feature_size=24 if width >= 16 else 12,
            spatial_dims=spatial_dims,
        )
    if name in ("umamba_bot", "umamba_enc"):
        cls = UMambaBot if name == "umamba_bot" else UMambaEnc
        return cls(spatial_dims, 1, 2, channels=widths, strides=(1, 2, 2, 2, 2))
    if name == "segmamba":
        return SegMamba(3, 1, 2, feature_size=widths[:4], hidden_size=widths[4])
    if name == "nnmamba":
        return NNMamba(spatial_dims, 1, 2, channels=width, blocks=3)
    raise ValueError(f"unknown network {name!r}")


def make_set(spatial_dims: int, size: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic cases (n, 1, *S) images and (n, 1, *S) binary labels."""
    from monai.data import create_test_image_2d, create_test_image_3d

    state = np.random.RandomState(seed)
    make = create_test_image_3d if spatial_dims == 3 else create_test_image_2d
    images, labels = [], []
    for _ in range(n):
        image, label = make(
            *([size] * spatial_dims),
            num_objs=8,
            rad_max=max(4, size // 8),
            rad_min=max(2, size // 20),
            noise_max=0.5,
            num_seg_classes=1,
            random_state=state,
        )
        images.append(torch.as_tensor(image, dtype=torch.float32)[None])
        labels.append(torch.as_tensor(label, dtype=torch.float32)[None])
    return torch.stack(images), torch.stack(labels)


def dice(logits: torch.Tensor, label: torch.Tensor) -> float:
    """Mean foreground Dice over cases."""
    pred, truth = logits.argmax(1) == 1, label[:, 0] == 1
    inter = (pred & truth).flatten(1).sum(1).float()
    total = (pred.flatten(1).sum(1) + truth.flatten(1).sum(1)).float()
    return float((2 * inter / total.clamp_min(1)).mean())


def held_out_dice(net: torch.nn.Module, data: dict, device: torch.device, amp: bool) -> float:
    """Mean foreground Dice of ``net`` on the held-out cases (eval mode, no gradient)."""
    net.eval()
    val_images, val_labels = data["val"]
    scores = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(len(val_images)):
            logits = net(val_images[i : i + 1].to(device)).float().cpu()
            scores.append(dice(logits, val_labels[i : i + 1]))
    net.train()
    return statistics.mean(scores)


def train_for_budget(
    name: str, spatial_dims: int, data: dict, args: argparse.Namespace
) -> list[dict]:
    """Train ``name`` for ``args.budget`` seconds; one result per budget in ``args.eval_at`` (the
    evaluations pause the clock, and the learning rate is constant, so the row at 600 s of an
    1800 s run is the result of a 600 s run with the same seed) and one at the full budget."""
    from monai.losses import DiceCELoss

    device = torch.device(args.device)
    images, labels = data["train"]
    amp = device.type == "cuda"
    # One untimed step first, so that kernel compilation/autotuning is not charged to the budget.
    warm = build(name, spatial_dims, args.width).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        warm(images[:2].to(device)).float().sum().backward()
    del warm
    torch.manual_seed(args.seed)
    net = build(name, spatial_dims, args.width).to(device)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    generator = torch.Generator().manual_seed(args.seed)
    # The budget is process CPU time on CPU (robust to other jobs sharing the cores), wall time
    # on CUDA (where the host CPU is idle while kernels run).
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    checkpoints = sorted({*args.eval_at, args.budget})
    results: list[dict] = []
    steps, losses, start = 0, [], clock()
    while checkpoints:
        if clock() - start >= checkpoints[0]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            paused = clock()
            results.append(
                {
                    "budget": checkpoints.pop(0),
                    "params": params,
                    "steps": steps,
                    "final_loss": statistics.mean(losses[-10:]) if losses else math.nan,
                    "dice": held_out_dice(net, data, device, amp),
                    "nan": any(not math.isfinite(v) for v in losses),
                }
            )
            start += clock() - paused  # evaluation is not training time
            continue
        idx = torch.randint(len(images), (2,), generator=generator)
        x, y = images[idx].to(device), labels[idx].to(device)
        for axis in range(2, 2 + spatial_dims):
            if torch.rand((), generator=generator) < 0.5:
                x, y = x.flip(axis), y.flip(axis)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        steps += 1
    return results


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return math.nan


def _reset_peak_rss() -> float:
    """Reset the peak-RSS mark (Linux clear_refs 5) and return the current RSS in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _peak_rss_growth_mb(base: float) -> float:
    return _status_mb("VmHWM") - base


def _cap_address_space(extra_mb: float) -> None:
    """Let this process map at most ``extra_mb`` MiB more than now (CPU cells only).

    A network that needs more then fails with a catchable allocation error inside its own
    process, instead of the kernel's OOM killer picking a victim on a shared machine.
    """
    import resource

    limit = int((_status_mb("VmSize") + extra_mb) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure_cost(
    name: str, size: int, width: int, device: str, repeats: int, mem_limit_mb: float = 0.0
) -> dict:
    """Inference and training-step time / peak memory of one network at size^3, batch 1.

    With ``mem_limit_mb`` > 0 (CPU), the cell may grow by at most that much beyond the built
    network; a network that needs more reports ``error`` with the phase, the peak it reached and
    the allocation that failed.
    """
    torch.manual_seed(0)
    import monai.networks.nets  # noqa: F401  (its import is not the network's memory)

    dev = torch.device(device)
    out: dict = {}
    phase, base = "build", math.nan
    try:
        net = build(name, 3, width).to(dev)
        x = torch.randn(1, 1, size, size, size, device=dev)
        y = (torch.rand(1, 1, size, size, size, device=dev) > 0.5).float()
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif mem_limit_mb > 0:
            _cap_address_space(mem_limit_mb)
        phase = "inference"
        base = _reset_peak_rss()
        net.eval()
        with torch.no_grad():
            net(x)
        out["infer_mb"] = (
            torch.cuda.max_memory_allocated() / 2**20
            if dev.type == "cuda"
            else _peak_rss_growth_mb(base)
        )
        if dev.type == "cpu":  # survives in stderr if the machine's OOM killer ends the cell
            print(json.dumps({"infer_mb": out["infer_mb"]}), file=sys.stderr, flush=True)
        phase = "train"
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base = _reset_peak_rss()
        times, cpu_times = [], []
        for i in range(repeats + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            loss = torch.nn.functional.cross_entropy(net(x), y[:, 0].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i > 0:  # the first step allocates and autotunes
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
        # --repeats 0: memory only (one untimed step, which allocates the optimizer state).
        out["step_s"] = statistics.median(times) if times else math.nan
        out["step_cpu_s"] = statistics.median(cpu_times) if cpu_times else math.nan
        out["train_mb"] = (
            torch.cuda.max_memory_allocated() / 2**20
            if dev.type == "cuda"
            else _peak_rss_growth_mb(base)
        )
    except torch.OutOfMemoryError:
        out["error"] = f"OOM in {phase}"
    except (RuntimeError, MemoryError) as error:  # CPU allocation failure (or the cap above)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        asked = re.search(r"allocate (\d+) bytes", message)
        out["error"] = f"{phase} failed" + (
            f": needs more than the {mem_limit_mb:.0f} MiB cap (peak reached "
            f"{_peak_rss_growth_mb(base):.0f} MiB, then asked for "
            f"{int(asked.group(1)) / 2**20:.0f} MiB more)"
            if asked and mem_limit_mb > 0
            else f": {message[:80]}"
        )
    return out


def _cost_in_subprocess(
    name: str, size: int, width: int, device: str, repeats: int, mem_limit_mb: float = 0.0
) -> dict:
    """measure_cost in a fresh interpreter, so that its peak RSS belongs to this cell alone."""
    command = [
        sys.executable,
        __file__,
        "--cost-cell",
        name,
        str(size),
        str(width),
        device,
        str(repeats),
        str(mem_limit_mb),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["?"]
        partial = {}
        for line in lines:
            if line.startswith('{"infer_mb"'):
                partial = json.loads(line)
        if done.returncode == -9:  # SIGKILL: on a shared machine, the kernel's OOM killer
            where = "train step" if partial else "inference"
            return {**partial, "error": f"killed (SIGKILL, machine out of memory?) in the {where}"}
        return {**partial, "error": f"failed (exit {done.returncode}: {lines[-1][:80]})"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(value: float | None, digits: int = 2) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small width/sizes/budget for CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=None, help="training seconds per network")
    parser.add_argument("--width", type=int, default=None, help="base channel width")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="cost cubes, e.g. 64 128"
    )
    parser.add_argument("--size3d", type=int, default=None, help="synthetic 3-D volume side")
    parser.add_argument("--size2d", type=int, default=None, help="synthetic 2-D image side")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed steps per cost cell (0: memory only)"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS_3D), help="subset of networks")
    parser.add_argument(
        "--accuracy-dims", type=int, nargs="+", default=[3, 2], help="accuracy parts: 3 and/or 2"
    )
    parser.add_argument(
        "--mem-limit-gb",
        type=float,
        default=0.0,
        help="CPU cost cells: fail cleanly past this growth (GiB) instead of meeting the OOM killer",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="initialisation and batch-order seed (same data)"
    )
    parser.add_argument(
        "--eval-at",
        type=float,
        nargs="+",
        default=[],
        help="also report held-out Dice at these shorter budgets (s) of the same run",
    )
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.budget = args.budget or (20.0 if quick else 60.0)
    bad = [b for b in args.eval_at if not 0 < b < args.budget]
    if bad:
        parser.error(
            f"--eval-at {bad}: each evaluation point must lie inside the training budget "
            f"(0 < s < --budget {args.budget:g}); the full budget is always evaluated."
        )
    args.width = args.width or (8 if quick else 16)
    args.sizes = args.sizes or ([64] if quick else [64, 128])
    args.size3d = args.size3d or (32 if quick else 64)
    args.size2d = args.size2d or (64 if quick else 128)
    if args.repeats is None:
        args.repeats = 2 if quick else 5
    if args.device == "cpu":
        torch.set_num_threads(1)
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    )

    lines = [
        f"# Segmentation benchmark ({args.device}: {device_name}, torch {torch.__version__})",
        "",
        f"`ssmkit bench segmentation {' '.join(argv or [])}`: width {args.width}, "
        f"training budget {args.budget:.0f} {'wall' if args.device == 'cuda' else 'CPU (1 thread)'} s per network, "
        f"{'bf16 autocast (SSM layers in fp32)' if args.device == 'cuda' else 'fp32'}.",
        "",
    ]
    if not args.skip_accuracy:
        for dims, size, n_train, n_val, names in (
            (3, args.size3d, 16, 4, MODELS_3D),
            (2, args.size2d, 64, 16, MODELS_2D),
        ):
            if dims not in args.accuracy_dims:
                continue
            data = {
                "train": make_set(dims, size, n_train, seed=0),
                "val": make_set(dims, size, n_val, seed=1),
            }
            lines += [
                f"## Accuracy at an equal {args.budget:.0f} s budget: {dims}-D synthetic "
                f"{size}^{dims} ({n_train} train / {n_val} held-out cases)",
                "",
                "| network | params (M) | budget (s) | steps in budget | final train loss "
                "| held-out Dice | NaN |",
                "|---|---|---|---|---|---|---|",
            ]
            for name in names:
                if name not in args.models:
                    continue
                try:
                    results = train_for_budget(name, dims, data, args)
                except (RuntimeError, ValueError) as error:  # e.g. a size the network rejects
                    row = f"| {name} | - | - | - | - | failed: {str(error).splitlines()[0][:70]} | - |"
                    print(row, flush=True)
                    lines.append(row)
                    continue
                for r in results:
                    row = f"| {name} | {r['params']:.2f} | {r['budget']:.0f} | {r['steps']} | {_fmt(r['final_loss'], 3)} | {r['dice']:.3f} | {'yes' if r['nan'] else 'no'} |"
                    print(row, flush=True)
                    lines.append(row)
            lines.append("")
    if args.skip_cost:
        args.sizes = []
    lines += [
        "## Cost per step, batch 1, 3-D (train = forward + backward + AdamW)",
        "",
        "| network | size | train step wall (s) | train step CPU (s) | train peak (MiB) | inference peak (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        for name in MODELS_3D:
            if name not in args.models:
                continue
            if args.device == "cuda":
                r = measure_cost(name, size, args.width, args.device, args.repeats)
                torch.cuda.empty_cache()
            else:
                r = _cost_in_subprocess(
                    name, size, args.width, args.device, args.repeats, args.mem_limit_gb * 1024
                )
            if "error" in r:
                row = f"| {name} | {size}^3 | {r['error']} | - | - | {_fmt(r.get('infer_mb'), 0)} |"
            else:
                row = f"| {name} | {size}^3 | {_fmt(r['step_s'], 3)} | {_fmt(r['step_cpu_s'], 3)} | {r['train_mb']:.0f} | {r['infer_mb']:.0f} |"
            print(row, flush=True)
            lines.append(row)
    table = "\n".join(lines) + "\n"
    write_text_atomic(args.out, table)
    print(table)
    return table


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cost-cell"]:
        cell_name, cell_size, cell_width, cell_device, cell_repeats, cell_cap = sys.argv[2:8]
        torch.set_num_threads(1)
        cell = measure_cost(
            cell_name,
            int(cell_size),
            int(cell_width),
            cell_device,
            int(cell_repeats),
            float(cell_cap),
        )
        print(json.dumps(cell))
    else:
        main(sys.argv[1:])
