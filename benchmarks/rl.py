"""RL benchmark: SSM vs GRU vs memoryless world-model agents on memory tasks, same env budget.

Part 1: DreamerAgent with an S5 (R2I-style), Mamba, GRU (DreamerV3) or memoryless world model on
TMaze with increasing memory length; greedy eval return (+1 = always right, 0 = chance).
Part 2: world-model training throughput (fwd+bwd of the loss) at sequence lengths 256 and 1024.

    ssmkit bench rl [--quick] [--steps N] [--lengths 3 8] [--models s5 gru mlp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmkit.core.files import save_figure_atomic, write_text_atomic
from ssmkit.rl.train import RLConfig, Trainer
from ssmkit.rl.world_model import SSMWorldModel

RESULTS = Path(__file__).resolve().parent / "results"


RUNS = RESULTS / "rl_runs"  # --quick runs go to results/rl_runs_quick instead


def task_spec(task: str) -> tuple[str, dict, str]:
    """``tmaze<L>`` (TMaze, corridor L) or ``repeatprev<k>`` (POPGym RepeatPrevious, k back)."""
    if task.startswith("tmaze") and task[5:].isdigit():
        length = int(task[5:])
        return "ssmkit/TMaze-v0", {"corridor_length": length}, f"TMaze L={length}"
    if task.startswith("repeatprev") and task[10:].isdigit():
        k = int(task[10:])
        return "popgym-RepeatPreviousEasy-v0", {"k": k}, f"RepeatPrevious k={k}"
    raise ValueError(f"--tasks: expected tmaze<L> or repeatprev<k> (e.g. tmaze3), got {task!r}.")


def run_agents(
    models: list[str],
    tasks: list[str],
    steps: int,
    seed: int,
    batch_size: int = 16,
    seq_len: int = 32,
    eval_episodes: int = 32,
    evals: int = 8,
    runs_dir: Path = RUNS,
) -> list[dict]:
    """One DreamerAgent per (task, model), identical hyperparameters; each run saved as JSON."""
    runs = []
    for task in tasks:
        env_id, env_kwargs, _ = task_spec(task)
        for model in models:
            config = RLConfig(
                env_id=env_id,
                world_model=model,
                env_kwargs=env_kwargs,
                total_env_steps=steps,
                eval_every=max(steps // evals, 8),
                eval_episodes=eval_episodes,
                prefill_env_steps=min(1000, steps // 8),
                updates_per_lockstep=1.0,
                batch_size=batch_size,
                seq_len=seq_len,
                seed=seed,
                tensorboard=False,
            )
            torch.manual_seed(seed)
            wall, cpu = time.perf_counter(), time.process_time()
            trainer = Trainer(config)
            history = trainer.run(progress=True)
            run = {
                "task": task,
                "model": model,
                "seed": seed,
                "env_steps": steps,
                "updates": trainer.updates,
                "history": history,
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
                "config": asdict(config),
            }
            runs_dir.mkdir(parents=True, exist_ok=True)
            path = runs_dir / f"{task}_{model}_s{seed}.json"
            write_text_atomic(path, json.dumps(run, indent=1))
            runs.append(run)
            print(_run_row(run), flush=True)
    return runs


def _final(run: dict) -> float:
    return statistics.mean(h["eval_return"] for h in run["history"][-2:])


def _late(run: dict) -> float:
    """Mean eval return over the second half of the evaluations (less noisy than ``final``)."""
    history = run["history"]
    return statistics.mean(h["eval_return"] for h in history[len(history) // 2 :])


def _run_row(run: dict) -> str:
    label = task_spec(run["task"])[2]
    curve = " ".join(f"{h['eval_return']:+.2f}" for h in run["history"])
    return (
        f"| {label} | {run['model']} | {run['seed']} | {run['env_steps']} | {run['updates']} | "
        f"{_final(run):+.2f} | {_late(run):+.2f} | {curve} | {run['cpu_s']:.0f} |"
    )


def report(tasks: list[str], models: list[str], runs_dir: Path = RUNS) -> list[str]:
    """Per-run rows, a per-(task, model) summary over seeds, and learning-curve PNGs."""
    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    runs = [r for r in runs if r["task"] in tasks and r["model"] in models]
    runs.sort(key=lambda r: (tasks.index(r["task"]), models.index(r["model"]), r["seed"]))
    rows = [
        "| task | world model | seed | env steps | updates | final return | second-half mean | "
        "eval curve | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_run_row(r) for r in runs],
        "",
        "| task | world model | seeds | mean final return (min, max) | mean second-half return |",
        "|---|---|---|---|---|",
    ]
    for task in tasks:
        for model in models:
            cell = [r for r in runs if r["task"] == task and r["model"] == model]
            if cell:
                finals = [_final(r) for r in cell]
                rows.append(
                    f"| {task_spec(task)[2]} | {model} | {len(cell)} | "
                    f"{statistics.mean(finals):+.2f} ({min(finals):+.2f}, {max(finals):+.2f}) | "
                    f"{statistics.mean(_late(r) for r in cell):+.2f} |"
                )
    for task in tasks:
        png = (RESULTS if runs_dir == RUNS else runs_dir) / f"rl_{task}.png"
        plot_curves([r for r in runs if r["task"] == task], png, task)
    return rows


def plot_curves(runs: list[dict], path: Path, task: str) -> None:
    """Eval return against env steps, one line per run, one colour per world model."""
    if not runs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"s5": "C0", "gru": "C1", "mlp": "C2", "mamba": "C3", "mamba2": "C4"}
    fig, ax = plt.subplots(figsize=(6, 4))
    seen = set()
    for run in runs:
        hist = run["history"]
        model = run["model"]
        ax.plot(
            [h["env_steps"] for h in hist],
            [h["eval_return"] for h in hist],
            color=colours.get(model, "k"),
            alpha=0.8,
            marker="o",
            markersize=3,
            label=None if model in seen else model,
        )
        seen.add(model)
    ax.set(xlabel="environment steps", ylabel="greedy eval return", title=task_spec(task)[2])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


# World models for ``--part probe``; "s5" is the current default (dt in [0.1, 1], d_state 32),
# "s5-paperdt" S5's own default step range dt in [0.001, 0.1] (what R2I's config keeps).
PAPER_DT = {"dt_min": 0.001, "dt_max": 0.1}
PROBE_VARIANTS: dict[str, dict] = {
    "s5": {"sequence_model": "s5"},
    "s5-paperdt": {"sequence_model": "s5", "mixer_kwargs": PAPER_DT},
    "s5-dtwide": {"sequence_model": "s5", "mixer_kwargs": {"dt_min": 0.01, "dt_max": 1.0}},
    "s5-glu": {"sequence_model": "s5", "ssm_glu": True},
    "s5-glu-paperdt": {"sequence_model": "s5", "mixer_kwargs": PAPER_DT, "ssm_glu": True},
    "mamba": {"sequence_model": "mamba"},
    "gru": {"sequence_model": "gru"},
    "mlp": {"sequence_model": "mlp"},
}


def probe(
    variants: list[str],
    length: int,
    updates: int,
    seed: int,
    batch_size: int = 16,
    seq_len: int = 32,
    every: int = 100,
) -> tuple[list[str], list[int]]:
    """World model alone on random-action TMaze data: held-out reward loss every ``every`` updates.

    The reward at the junction depends on cue x action, so a world model whose reward loss stays
    at the variance (~0.16-0.25) does not carry the cue ``length`` steps.
    """
    import gymnasium as gym

    from ssmkit.rl.replay import SequenceReplay, VectorCollector
    from ssmkit.rl.wrappers import make_env

    envs = gym.vector.SyncVectorEnv(
        [lambda: make_env("ssmkit/TMaze-v0", corridor_length=length)] * 8
    )
    replay = SequenceReplay(4000, 4, 2, 8)
    collector = VectorCollector(envs, replay, seed=seed)
    policy_gen = torch.Generator().manual_seed(seed)
    for _ in range(4000):
        collector.step(
            lambda obs, first: torch.randint(0, 2, (obs.shape[0],), generator=policy_gen)
        )
    held_out = replay.sample(64, seq_len, torch.Generator().manual_seed(seed + 1))
    checkpoints = list(range(0, updates + 1, every))
    rows = []
    for name in variants:
        torch.manual_seed(seed)
        wm = SSMWorldModel(obs_dim=4, num_actions=2, d_hidden=64, **PROBE_VARIANTS[name])
        opt = torch.optim.Adam(wm.parameters(), lr=1e-3, eps=1e-8)
        sample_gen = torch.Generator().manual_seed(seed + 2)
        losses, start = [], time.process_time()
        for update in range(updates + 1):
            if update in checkpoints:
                with torch.no_grad():
                    losses.append(wm.loss(held_out)[1]["wm/reward"])
            if update == updates:
                break
            loss, _, _ = wm.loss(replay.sample(batch_size, seq_len, sample_gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(wm.parameters(), 100.0)
            opt.step()
        cpu_ms = (time.process_time() - start) / max(updates, 1) * 1e3
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in losses) + f" | {cpu_ms:.0f} |")
        print(rows[-1], flush=True)
    return rows, checkpoints


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
    parser.add_argument(
        "--part",
        choices=("all", "agents", "report", "throughput", "probe"),
        default="all",
        help="agents: train and save runs/*.json; report: tables + PNGs from the saved runs; "
        "throughput: world-model fwd+bwd speed; probe: world model alone on random-action TMaze",
    )
    parser.add_argument("--steps", type=int, default=None, help="env steps per agent")
    parser.add_argument(
        "--tasks", nargs="+", default=["tmaze1", "tmaze3"], help="tmaze<L>, repeatprev<k>"
    )
    parser.add_argument("--models", nargs="+", default=["s5", "gru", "mlp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--batch-size", type=int, default=16, help="replay batch (sequences)")
    parser.add_argument("--seq-len", type=int, default=32, help="replay sequence length")
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=None, help="throughput repeats")
    parser.add_argument("--variants", nargs="+", default=list(PROBE_VARIANTS), help="probe models")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 3], help="probe corridors")
    parser.add_argument("--updates", type=int, default=600, help="probe world-model updates")
    parser.add_argument("--tag", default="", help="suffix of the result file (rl<tag>.md)")
    args = parser.parse_args(argv)
    steps = args.steps or (800 if args.quick else 12_000)
    runs_dir = RESULTS / "rl_runs_quick" if args.quick else RUNS
    torch.set_num_threads(args.threads)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# RL: SSM world models on memory tasks", "", f"`ssmkit bench rl {command}`", ""]

    if args.part == "probe":
        updates = 60 if args.quick else args.updates
        every = max(updates // 6, 1)
        for length in args.lengths:
            header = [
                f"TMaze L={length}: held-out reward loss after N world-model updates, CPU ms / update",
                "",
                "| model | " + " | ".join(str(u) for u in range(0, updates + 1, every)) + " | ms |",
                "|---" * (updates // every + 3) + "|",
            ]
            print("\n".join(header))
            rows, _ = probe(args.variants, length, updates, args.seeds[0], every=every)
            lines += [*header, *rows, ""]
    if args.part in ("all", "agents"):
        for seed in args.seeds:
            run_agents(
                args.models,
                args.tasks,
                steps,
                seed,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                eval_episodes=8 if args.quick else args.eval_episodes,
                runs_dir=runs_dir,
            )
    if args.part in ("all", "agents", "report"):
        lines += [
            "Same env-step budget and hyperparameters for every world model (DreamerAgent, 8 envs,",
            f"1 update per 8 env steps, replay batch {args.batch_size} x {args.seq_len}). Eval: mean greedy",
            "return; `final` averages the last two evaluations. CPU s = process time, 1 thread.",
            "",
            *report(args.tasks, args.models, runs_dir),
            "",
        ]
    if args.part in ("all", "throughput"):
        repeats = args.repeats or (2 if args.quick else 5)
        lines += [
            "## World-model training throughput (fwd+bwd of the loss, batch 4, width 128, 1 thread)",
            "",
            "| seq len | sequence model | ms / update | steps / s |",
            "|---|---|---|---|",
            *throughput(["s5", "mamba", "gru"], [256, 1024], repeats=repeats),
            "",
        ]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    tag = args.tag or ("_quick" if args.quick else "")  # a smoke run never replaces rl.md
    write_text_atomic(RESULTS / f"rl{tag}.md", table)


if __name__ == "__main__":
    main()
