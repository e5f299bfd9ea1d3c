"""RL benchmark: SSM vs GRU vs memoryless world-model agents on memory tasks, same env budget.

Part 1: DreamerAgent with an S5 (R2I-style), Mamba, GRU (DreamerV3) or memoryless world model on
TMaze with increasing memory length; greedy eval return (+1 = always right, 0 = chance).
Part 2: world-model training throughput (fwd+bwd of the loss) at sequence lengths 256 and 1024.

    ssmkit bench rl [--quick] [--steps N] [--lengths 3 8] [--models s5 gru mlp]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmkit.rl.train import RLConfig, Trainer, plot_learning_curve
from ssmkit.rl.world_model import SSMWorldModel

RESULTS = Path(__file__).resolve().parent / "results"


def run_agents(
    models: list[str],
    lengths: list[int],
    steps: int,
    seed: int,
    batch_size: int = 16,
    seq_len: int | None = None,
    eval_episodes: int = 32,
    threads: int = 2,
) -> tuple[list[str], dict]:
    rows, curves = [], {}
    for length in lengths:
        for model in models:
            config = RLConfig(
                world_model=model,
                env_kwargs={"corridor_length": length},
                total_env_steps=steps,
                eval_every=max(steps // 8, 8),
                eval_episodes=eval_episodes,
                prefill_env_steps=min(1000, steps // 8),
                updates_per_lockstep=1.0,
                batch_size=batch_size,
                seq_len=seq_len or max(32, 4 * (length + 2)),
                seed=seed,
            )
            torch.manual_seed(seed)
            torch.set_num_threads(threads)
            start = time.perf_counter()
            history = Trainer(config).run(progress=True)
            wall = time.perf_counter() - start
            final = statistics.mean(h["eval_return"] for h in history[-2:])
            best = max(h["eval_return"] for h in history)
            curves[(model, length)] = history
            rows.append(
                f"| TMaze L={length} | {model} | {steps} | {final:+.2f} | {best:+.2f} | {wall:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows, curves


def throughput(models: list[str], lengths: list[int], repeats: int) -> list[str]:
    rows = []
    for length in lengths:
        for model in models:
            wm = SSMWorldModel(obs_dim=16, num_actions=4, sequence_model=model, d_hidden=128)
            is_first = torch.zeros(4, length, dtype=torch.bool)
            is_first[:, 0] = True
            batch = {
                "obs": torch.randn(4, length, 16),
                "action": F.one_hot(torch.randint(4, (4, length)), 4).float(),
                "reward": torch.randn(4, length),
                "is_first": is_first,
                "is_terminal": torch.zeros(4, length, dtype=torch.bool),
            }
            times = []
            for _ in range(repeats + 1):
                start = time.perf_counter()
                loss, _, _ = wm.loss(batch)
                loss.backward()
                times.append(time.perf_counter() - start)
            median = statistics.median(times[1:])
            rows.append(f"| {length} | {model} | {median * 1e3:.0f} | {4 * length / median:,.0f} |")
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small budget smoke run")
    parser.add_argument("--steps", type=int, default=None, help="env steps per agent")
    parser.add_argument("--lengths", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--models", nargs="+", default=["s5", "gru", "mlp"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="replay batch (sequences)")
    parser.add_argument("--seq-len", type=int, default=None, help="replay sequence length")
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=None, help="throughput repeats")
    parser.add_argument(
        "--part", choices=("all", "agents", "throughput"), default="all", help="what to run"
    )
    parser.add_argument("--tag", default="", help="suffix of the result file (rl<tag>.md)")
    args = parser.parse_args(argv)
    steps = args.steps or (2_000 if args.quick else 24_000)
    torch.set_num_threads(args.threads)

    agent_rows, curves = [], {}
    if args.part in ("all", "agents"):
        agent_rows, curves = run_agents(
            args.models,
            args.lengths,
            steps,
            args.seed,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            eval_episodes=args.eval_episodes,
            threads=args.threads,
        )
    speed_rows = []
    if args.part in ("all", "throughput"):
        repeats = args.repeats or (2 if args.quick else 5)
        speed_rows = throughput(["s5", "mamba", "gru"], [256, 1024], repeats=repeats)

    RESULTS.mkdir(exist_ok=True)
    for (model, length), history in curves.items():
        plot_learning_curve(
            history, RESULTS / f"rl_{model}_tmaze{length}.png", title=f"{model} on TMaze L={length}"
        )
    table = "\n".join(
        [
            "# RL: SSM world models on memory tasks",
            "",
            f"`ssmkit bench rl {' '.join(argv if argv is not None else __import__('sys').argv[1:])}`",
            "on a shared 2-core CPU; same env-step budget and hyperparameters for every world model",
            f"(DreamerAgent, 8 envs, 1 update per 8 env steps, batch {args.batch_size}). Eval: mean",
            f"greedy return of {args.eval_episodes} episodes, +1 = always the cued arm, 0 = chance.",
            "`final` averages the last two evaluations.",
            "",
            "| task | world model | env steps | final return | best return | wall s |",
            "|---|---|---|---|---|---|",
            *agent_rows,
            "",
            "## World-model training throughput (fwd+bwd of the loss, batch 4, width 128)",
            "",
            "| seq len | sequence model | ms / update | steps / s |",
            "|---|---|---|---|",
            *speed_rows,
            "",
        ]
    )
    print(table)
    (RESULTS / f"rl{args.tag}.md").write_text(table)


if __name__ == "__main__":
    main()
