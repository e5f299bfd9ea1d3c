"""Vim-Ti and VMamba-T on real images that ship with scikit-learn (``load_digits``), on CPU.

1. From scratch: the 8x8 handwritten digits (1797 images, 10 classes), bilinearly upsampled to
   32x32 and replicated to 3 channels, stratified 80/20 split; Vim-Ti width (D 192, reduced depth,
   8x8 patches -> 16 tokens + middle cls) and VMamba-T widths (C 96, reduced depths), both built
   through ``timm.create_model`` after ``import ssmkit.vision``. Target: >= 95% test accuracy.
2. Transfer: pretrain Vim on digits 0-4, then fine-tune on digits 5-9 (new head) for a few steps,
   against the same model trained from scratch on 5-9 for the same steps. Target: fine-tuned > scratch.

Usage: ``ssmkit bench vision_digits [--quick] [--epochs N] [--threads T]``. Writes
``benchmarks/results/vision_digits.md``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results" / "vision_digits.md"


def load_data(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
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
) -> float:
    """AdamW + warm-up/cosine, label smoothing 0.1; returns seconds per step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
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
        loss = F.cross_entropy(model(augment(x[idx])), y[idx], label_smoothing=0.1)
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
    parser.add_argument("--pretrain-epochs", type=float, default=8.0, help="Vim epochs on 0-4")
    parser.add_argument("--finetune-steps", type=int, default=12, help="steps on 5-9")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="upsampled image size")
    parser.add_argument("--threads", type=int, default=1, help="1: OpenMP spin-waits on a busy CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    parser.add_argument(
        "--parts", default="scratch,transfer", help="comma list of parts: scratch, transfer"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results markdown file")
    parser.add_argument("--models", default="vim,vmamba", help="from-scratch models: vim, vmamba")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.pretrain_epochs, args.finetune_steps = 0.1, 0.1, 2
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
        lines += transfer(args, data, builders["Vim-Ti (D 192, depth 2, 8x8 patches)"])
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(args.out)


def transfer(args: argparse.Namespace, data: dict[str, torch.Tensor], vim) -> list[str]:
    """Pretrain on 0-4, fine-tune on 5-9 vs scratch with the same steps; markdown lines."""
    x04, y04 = subset(data["x_train"], data["y_train"], range(0, 5))
    x59, y59 = subset(data["x_train"], data["y_train"], range(5, 10))
    t59x, t59y = subset(data["x_test"], data["y_test"], range(5, 10))
    torch.manual_seed(args.seed)
    pre = vim(5)
    pre_steps = max(1, round(args.pretrain_epochs * math.ceil(len(y04) / args.batch_size)))
    train(pre, x04, y04, pre_steps, args.batch_size, 2e-3, pre_steps // 10, args.seed)
    pre_acc = accuracy(pre, *subset(data["x_test"], data["y_test"], range(0, 5)))
    pre.reset_classifier(5)
    k = args.finetune_steps
    train(pre, x59, y59, k, args.batch_size, 1e-3, 0, args.seed + 1)
    ft_acc = accuracy(pre, t59x, t59y)
    torch.manual_seed(args.seed + 1)
    scratch = vim(5)
    train(scratch, x59, y59, k, args.batch_size, 1e-3, 0, args.seed + 1)
    sc_acc = accuracy(scratch, t59x, t59y)
    print(f"pretrain 0-4 acc {pre_acc:.3f}; 5-9 fine-tuned {ft_acc:.3f} vs scratch {sc_acc:.3f}")

    return [
        "## Transfer: pretrain on digits 0-4, then digits 5-9",
        "",
        f"Vim (as above) pretrained {pre_steps} steps on 0-4 (test top-1 on 0-4: "
        f"{100 * pre_acc:.1f}%), new head, then {k} steps on 5-9 (lr 1e-3, no warm-up), against "
        f"the same model from scratch for the same {k} steps.",
        "",
        "| run | steps on 5-9 | test top-1 on 5-9 |",
        "|---|---|---|",
        f"| fine-tuned from 0-4 | {k} | {100 * ft_acc:.1f}% |",
        f"| from scratch | {k} | {100 * sc_acc:.1f}% |",
        "",
    ]


if __name__ == "__main__":
    main()
