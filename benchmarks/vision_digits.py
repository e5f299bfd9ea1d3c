"""Vim-Ti and VMamba-T on real images that ship with scikit-learn (``load_digits``), on CPU.

1. From scratch: the 8x8 handwritten digits (1797 images, 10 classes), bilinearly upsampled to
   32x32 and replicated to 3 channels, stratified 80/20 split; Vim-Ti width (D 192, reduced depth,
   8x8 patches -> 16 tokens + middle cls) and VMamba-T widths (C 96, reduced depths), both built
   through ``timm.create_model`` after ``import ssmkit.vision``. Target: >= 95% test accuracy.
2. Transfer in the low-data regime, where pretraining is meant to help: pretrain each model on
   digits 0-4, then train on a few labelled images per class of digits 5-9 (``--shots``), the
   pretrained backbone with a new head (layer-wise lr decay) against the same architecture from
   scratch, with the same steps, batch, lr schedule and augmentation draws, over several labelled
   draws (``--seeds``) and a small peak-lr grid. Target: fine-tuned > scratch beyond the seed spread.

Usage: ``ssmkit bench vision_digits [--quick] [--parts scratch,transfer] [--models vim,vmamba]
[--shots 2] [--seeds 5] [--transfer-digit-size 20]``; 1 thread by default (step counts are fixed, so results do not depend
on the machine's load; the load average is recorded). Writes
``benchmarks/results/vision_digits.md``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmkit.core.files import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "vision_digits.md"


def load_data(size: int, seed: int = 0, digit_size: int | None = None) -> dict[str, torch.Tensor]:
    """Upsampled digits, ``(N, 3, size, size)`` in [-1, 1], stratified 80/20 split.

    ``digit_size`` < ``size``: each digit is upsampled to ``digit_size`` and placed at a random
    (seeded, per-image) position of a blank ``size`` canvas, so position varies as in photos.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    if digit_size is None or digit_size >= size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    else:
        small = F.interpolate(
            x, size=(digit_size, digit_size), mode="bilinear", align_corners=False
        )
        gen = torch.Generator().manual_seed(seed + 1)
        offsets = torch.randint(0, size - digit_size + 1, (len(x), 2), generator=gen).tolist()
        x = torch.zeros(len(x), 1, size, size)
        for i, (top, left) in enumerate(offsets):
            x[i, :, top : top + digit_size, left : left + digit_size] = small[i]
    x = ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, random_state=seed, stratify=y.numpy()
    )
    return {
        "x_train": x[idx_train],
        "y_train": y[idx_train],
        "x_test": x[idx_test],
        "y_test": y[idx_test],
    }


def subset(x: torch.Tensor, y: torch.Tensor, classes: range) -> tuple[torch.Tensor, torch.Tensor]:
    keep = (y >= classes.start) & (y < classes.stop)
    return x[keep], y[keep] - classes.start


def augment(x: torch.Tensor, shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (same for the whole batch: cheap)."""
    dx, dy = torch.randint(-shift, shift + 1, (2,)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
    label_smoothing: float = 0.1,
) -> float:
    """Warm-up/cosine, label smoothing 0.1, grad clip 1; returns seconds per step.

    ``optimizer`` defaults to AdamW(lr, wd 0.05) on every parameter (the from-scratch part); the
    schedule multiplies each group's own lr, so layer-wise decayed groups keep their ratios.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / (warmup + 1)
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )
    model.train()
    order = torch.randperm(len(y), generator=gen)
    pos = 0
    start = time.perf_counter()
    for _ in range(steps):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(y), generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(model(augment(x[idx])), y[idx], label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return (time.perf_counter() - start) / max(1, steps)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(y), 256):
        correct += (model(x[i : i + 256]).argmax(-1) == y[i : i + 256]).sum().item()
    return correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, smoke test only")
    parser.add_argument("--epochs", type=float, default=8.0, help="from-scratch epochs")
    parser.add_argument("--pretrain-epochs", type=float, default=10.0, help="epochs on 0-4")
    parser.add_argument("--finetune-steps", type=int, default=40, help="steps on 5-9 (both arms)")
    parser.add_argument("--finetune-warmup", type=int, default=4, help="warm-up steps on 5-9")
    parser.add_argument("--finetune-lrs", default="1e-3,3e-3", help="peak lr grid on 5-9")
    parser.add_argument("--shots", type=int, default=2, help="labelled images per class of 5-9")
    parser.add_argument("--seeds", type=int, default=5, help="labelled draws (seeds) per arm")
    parser.add_argument("--layer-decay", type=float, default=0.75, help="fine-tuned arm only")
    parser.add_argument("--probe-lr", type=float, default=1e-2, help="linear-probe head lr")
    parser.add_argument(
        "--pretrain-label-smoothing", type=float, default=0.0, help="0-4 pretraining"
    )
    parser.add_argument(
        "--pretrain-lr",
        type=float,
        default=2e-3,
        help="0-4 pretraining peak lr (VMamba on the canvas variant needs 5e-4: 2e-3 collapses it)",
    )
    parser.add_argument(
        "--transfer-digit-size",
        type=int,
        default=None,
        help="transfer part: digit size on a --size canvas at random positions (default: full)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="upsampled image size")
    parser.add_argument("--threads", type=int, default=1, help="1: OpenMP spin-waits on a busy CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    parser.add_argument(
        "--parts", default="scratch,transfer", help="comma list of parts: scratch, transfer"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results markdown file")
    parser.add_argument("--models", default="vim,vmamba", help="models: vim, vmamba")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.pretrain_epochs, args.finetune_steps = 0.1, 0.1, 2
        args.seeds, args.finetune_lrs, args.finetune_warmup = 2, "1e-3", 1
    torch.set_num_threads(args.threads)
    import timm

    import ssmkit.vision  # registers vim_* / vmamba_* with timm

    assert ssmkit.vision.timm_available()
    data = load_data(args.size, args.seed)
    builders = {
        "Vim-Ti (D 192, depth 2, 8x8 patches)": lambda n: timm.create_model(
            "vim_tiny_patch16_224", num_classes=n, img_size=args.size, patch_size=8, depth=2
        ),
        "VMamba-T (C 96, depths 1-1-1-1)": lambda n: timm.create_model(
            "vmamba_tiny", num_classes=n, depths=(1, 1, 1, 1)
        ),
    }
    parts = set(args.parts.split(","))
    rows = []
    steps_per_epoch = math.ceil(len(data["y_train"]) / args.batch_size)
    steps = max(1, round(args.epochs * steps_per_epoch))
    chosen = [n for n, key in zip(builders, ("vim", "vmamba")) if key in args.models.split(",")]
    for name in chosen if "scratch" in parts else []:
        build = builders[name]
        torch.manual_seed(args.seed)
        model = build(10)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        sec = train(
            model,
            data["x_train"],
            data["y_train"],
            steps,
            args.batch_size,
            2e-3,
            steps // 10,
            args.seed,
        )
        acc = accuracy(model, data["x_test"], data["y_test"])
        rows.append((name, f"{params:.2f}M", steps, f"{sec:.2f}", f"{100 * acc:.1f}%"))
        print(rows[-1], flush=True)

    lines = [
        "# vision_digits: Vim-Ti and VMamba-T on sklearn digits (CPU)",
        "",
        f"`ssmkit bench vision_digits{' --quick' if args.quick else ''}` ({args.threads} threads, "
        f"images {args.size}x{args.size}, batch {args.batch_size}, AdamW lr 2e-3 wd 0.05, warm-up + "
        "cosine, label smoothing 0.1, random shifts; 1437 train / 360 test, stratified, seed "
        f"{args.seed}). Reduced depths keep CPU training short; widths are the published ones.",
        f"Load average at the end of the run (1/5/15 min): {load_average()}.",
        "",
    ]
    if rows:
        lines += [
            "## From scratch, 10 classes",
            "",
            "| model | params | steps | s/step | test top-1 |",
            "|---|---|---|---|---|",
            *[f"| {' | '.join(map(str, r))} |" for r in rows],
            "",
        ]
    if "transfer" in parts:
        lines += transfer(args, {n: builders[n] for n in chosen})
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_text_atomic(args.out, text)


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def few_shot(
    x: torch.Tensor, y: torch.Tensor, shots: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``shots`` images per class, drawn with ``seed`` (the labelled set of one transfer run)."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in y.unique().tolist():
        idx = (y == c).nonzero().flatten()
        if len(idx) < shots:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than shots={shots}.")
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:shots]])
    keep = torch.cat(keep)
    return x[keep], y[keep]


def timm_optimizer(
    model: torch.nn.Module, lr: float, layer_decay: float | None
) -> torch.optim.Optimizer:
    """timm AdamW (wd 0.05, none on norms / biases / A_log / D / pos_embed), layer-wise lr decay
    over ``group_matcher`` applied to each group's lr (timm stores it as ``lr_scale``)."""
    from timm.optim import create_optimizer_v2

    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=0.05, layer_decay=layer_decay)
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return opt


def mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def transfer_run(
    arm: str,
    build,
    state: dict[str, torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    lr: float,
    args: argparse.Namespace,
    seed: int,
) -> float:
    """One arm on one labelled draw; returns test top-1 on digits 5-9.

    ``fine-tuned``: pretrained backbone, new head, every parameter trained with layer-wise lr
    decay; ``scratch``: fresh init, every parameter trained; ``probe: pretrained`` / ``probe: random
    init``: frozen backbone, only the new head trained (a diagnostic of the features).
    """
    xs, ys, tx, ty = data
    torch.manual_seed(10_000 + seed)  # the same init draws in every arm
    model = build(5)
    if arm in ("fine-tuned", "probe: pretrained"):
        model.load_state_dict(state)
    model.reset_classifier(5)  # a new head for the new classes
    if arm.startswith("probe"):
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
        opt = torch.optim.AdamW(model.get_classifier().parameters(), lr=lr, weight_decay=0.05)
    else:
        opt = timm_optimizer(model, lr, args.layer_decay if arm == "fine-tuned" else None)
    torch.manual_seed(20_000 + seed)  # the same augmentation draws in every arm
    batch = min(args.batch_size, len(ys))
    train(model, xs, ys, args.finetune_steps, batch, lr, args.finetune_warmup, seed, optimizer=opt)
    return accuracy(model, tx, ty)


def transfer_runs(
    arm: str,
    lr: float,
    name: str,
    build,
    state: dict[str, torch.Tensor],
    draws: dict[int, tuple[torch.Tensor, ...]],
    args: argparse.Namespace,
    seeds: list[int],
) -> list[float]:
    """``transfer_run`` over every seed's labelled draw, printing each accuracy."""
    out = []
    for s in seeds:
        out.append(transfer_run(arm, build, state, draws[s], lr, args, s))
        print(f"{name} | {arm} | lr {lr:g} | seed {s}: {out[-1]:.3f}", flush=True)
    return out


def transfer(args: argparse.Namespace, builders: dict) -> list[str]:
    """Low-data transfer: pretrain on digits 0-4, then a few labelled images per class of 5-9.

    Per model, one pretraining run on all training images of 0-4. Then, per seed, ``shots``
    labelled images per class of 5-9 are drawn and each arm trains on them for the same steps,
    batch, warm-up/cosine schedule and augmentation draws; fine-tuned and scratch over the same
    peak-lr grid. Test on all 5-9 test images. Returns markdown lines.
    """
    data = load_data(args.size, args.seed, digit_size=args.transfer_digit_size)
    x04, y04 = subset(data["x_train"], data["y_train"], range(0, 5))
    x59, y59 = subset(data["x_train"], data["y_train"], range(5, 10))
    t04x, t04y = subset(data["x_test"], data["y_test"], range(0, 5))
    t59x, t59y = subset(data["x_test"], data["y_test"], range(5, 10))
    seeds = list(range(args.seed, args.seed + args.seeds))
    lrs = [float(v) for v in args.finetune_lrs.split(",")]
    table, probes, summary, pre_notes = [], [], [], []
    for name, build in builders.items():
        torch.manual_seed(args.seed)
        pre = build(5)
        pre_steps = max(1, round(args.pretrain_epochs * math.ceil(len(y04) / args.batch_size)))
        cpu = time.process_time()
        train(
            pre,
            x04,
            y04,
            pre_steps,
            args.batch_size,
            args.pretrain_lr,
            pre_steps // 10,
            args.seed,
            label_smoothing=args.pretrain_label_smoothing,
        )
        pre_cpu = time.process_time() - cpu
        pre_acc = accuracy(pre, t04x, t04y)
        pre_notes.append(
            f"{name}: {pre_steps} pretraining steps on 0-4 at peak lr {args.pretrain_lr:g} "
            f"({pre_cpu:.0f} s CPU), test top-1 on "
            f"0-4 {100 * pre_acc:.1f}%"
        )
        print(pre_notes[-1], flush=True)
        state = copy.deepcopy(pre.state_dict())
        draws = {s: (*few_shot(x59, y59, args.shots, s), t59x, t59y) for s in seeds}

        def runs(arm: str, lr: float, _ctx=(name, build, state, draws)) -> list[float]:
            return transfer_runs(arm, lr, *_ctx, args, seeds)

        best: dict[str, tuple[float, float, float, list[float]]] = {}
        for lr in lrs:
            ft_accs, sc_accs = runs("fine-tuned", lr), runs("scratch", lr)
            ft, sc = mean_std(ft_accs), mean_std(sc_accs)
            gap = mean_std([a - b for a, b in zip(ft_accs, sc_accs)])
            wins = sum(a > b for a, b in zip(ft_accs, sc_accs))
            table.append(
                f"| {name} | {lr:g} | {100 * ft[0]:.1f} +- {100 * ft[1]:.1f} | "
                f"{100 * sc[0]:.1f} +- {100 * sc[1]:.1f} | {100 * gap[0]:+.1f} +- "
                f"{100 * gap[1]:.1f} | {wins}/{len(seeds)} |"
            )
            for arm, stat, accs in (("fine-tuned", ft, ft_accs), ("scratch", sc, sc_accs)):
                if arm not in best or stat[0] > best[arm][0]:
                    best[arm] = (stat[0], stat[1], lr, accs)
        pp, pr = (
            mean_std(runs("probe: pretrained", args.probe_lr)),
            mean_std(runs("probe: random init", args.probe_lr)),
        )
        probes.append(
            f"| {name} | {100 * pp[0]:.1f} +- {100 * pp[1]:.1f} | "
            f"{100 * pr[0]:.1f} +- {100 * pr[1]:.1f} |"
        )
        ft_b, sc_b = best["fine-tuned"], best["scratch"]
        beyond = ft_b[0] - ft_b[1] > sc_b[0] + sc_b[1]
        summary.append(
            f"| {name} | {100 * ft_b[0]:.1f} +- {100 * ft_b[1]:.1f} (lr {ft_b[2]:g}) | "
            f"{100 * sc_b[0]:.1f} +- {100 * sc_b[1]:.1f} (lr {sc_b[2]:g}) | "
            f"{100 * (ft_b[0] - sc_b[0]):+.1f} | {'yes' if beyond else 'no'} |"
        )
    decay = "off" if args.layer_decay is None else f"{args.layer_decay:g}"
    place = (
        "full-size digits (as above)"
        if args.transfer_digit_size is None
        else f"each digit upsampled to {args.transfer_digit_size}x{args.transfer_digit_size} and "
        f"placed at a random (seeded, per-image) position of a blank {args.size}x{args.size} "
        "canvas, so position varies as in photos"
    )
    return [
        "## Transfer: pretrain on digits 0-4, a few labelled images per class of 5-9",
        "",
        f"Images: {place}. Each model is pretrained once on all {len(y04)} training images of "
        f"digits 0-4 (batch {args.batch_size}, AdamW lr {args.pretrain_lr:g}, 10% warm-up + cosine, label "
        f"smoothing {args.pretrain_label_smoothing:g}). Then, for each of {len(seeds)} seeds, "
        f"{args.shots} labelled training images per class of digits 5-9 ({5 * args.shots} "
        "images) are drawn, and every arm trains on them for the same "
        f"{args.finetune_steps} steps (batch {min(args.batch_size, 5 * args.shots)}, "
        f"{args.finetune_warmup} warm-up steps then cosine, label smoothing 0.1, the same init "
        "and random-shift draws): **fine-tuned** = pretrained backbone + new 5-class head, all "
        f"parameters, timm AdamW wd 0.05 with layer-wise lr decay {decay} over `group_matcher`; "
        "**scratch** = the same architecture from a fresh init, all parameters, same optimizer "
        "without layer decay. Test: all "
        f"{len(t59y)} test images of 5-9; mean +- std over seeds; the gap is paired per seed.",
        "",
        *[f"- {note}" for note in pre_notes],
        "",
        "| model | peak lr | fine-tuned top-1 % | scratch top-1 % | gap (points) | ft wins |",
        "|---|---|---|---|---|---|",
        *table,
        "",
        "Each arm at its own best peak lr from the grid ('beyond the seed spread': fine-tuned "
        "mean - std > scratch mean + std):",
        "",
        "| model | fine-tuned % | scratch % | difference | fine-tuned > scratch beyond the seed "
        "spread |",
        "|---|---|---|---|---|",
        *summary,
        "",
        f"Diagnostic, linear probe (backbone frozen, only a new head trained, lr {args.probe_lr:g}, "
        "same steps and draws): how good are the features themselves for 5-9?",
        "",
        "| model | pretrained-on-0-4 features % | random-init features % |",
        "|---|---|---|",
        *probes,
        "",
    ]


if __name__ == "__main__":
    main()
