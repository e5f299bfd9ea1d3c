"""``ssmkit rl train``: train a DreamerAgent with an SSM (or GRU) world model on a gymnasium env."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssmkit.rl.world_model import SEQUENCE_MODELS


def _env_kwarg(text: str) -> tuple[str, int | float | str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ssmkit rl", description="SSM world-model agents on gymnasium envs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train (or resume) an agent; writes metrics.csv, checkpoint.pt, learning_curve.png",
    )
    train.add_argument(
        "--env",
        default="ssmkit/TMaze-v0",
        help="gymnasium id (ssmkit/TMaze-v0, popgym-RepeatPreviousEasy-v0, ...)",
    )
    train.add_argument(
        "--env-kwarg",
        action="append",
        type=_env_kwarg,
        default=[],
        metavar="KEY=VALUE",
        help="e.g. corridor_length=8",
    )
    train.add_argument("--world-model", choices=SEQUENCE_MODELS, default="s5")
    train.add_argument("--steps", type=int, default=20_000, help="environment steps")
    train.add_argument("--num-envs", type=int, default=8)
    train.add_argument("--eval-every", type=int, default=2_000)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out-dir", default="runs/rl")
    train.add_argument(
        "--resume", help="checkpoint.pt to continue from (its config wins, except --steps)"
    )
    args = parser.parse_args(argv)

    from ssmkit.rl.train import RLConfig, Trainer

    if args.resume:
        if not Path(args.resume).is_file():
            parser.error(f"--resume: no checkpoint at {args.resume}")
        trainer = Trainer.load(args.resume, total_env_steps=args.steps)
    else:
        config = RLConfig(
            env_id=args.env,
            env_kwargs=dict(args.env_kwarg),
            world_model=args.world_model,
            num_envs=args.num_envs,
            total_env_steps=args.steps,
            eval_every=args.eval_every,
            seed=args.seed,
            out_dir=args.out_dir,
        )
        trainer = Trainer(config)
    history = trainer.run()
    print(
        json.dumps(
            {
                "env_steps": trainer.collector.env_steps,
                "updates": trainer.updates,
                "eval_return": history[-1]["eval_return"] if history else None,
            }
        )
    )
    return 0
