"""``ssmkit`` command line (also ``python -m ssmkit``)."""

from __future__ import annotations

import importlib
import sys

import ssmkit

# Domain verbs: "verb": ("module", "function", "one-line help"). Imported only when used.
DOMAIN_VERBS: dict[str, tuple[str, str, str]] = {
    "rl": ("ssmkit.rl.cli", "main", "rl train --env ID --world-model s5|mamba|gru ..."),
    "separate": ("ssmkit.audio.separate", "main", "separate MIX.wav --checkpoint CKPT [...]"),
    "segment": ("ssmkit.bio.segment", "main", "segment IMAGE.nii.gz --checkpoint CKPT [...]"),
    "forecast": ("ssmkit.timeseries.cli", "main", "forecast train|predict --csv FILE.csv [...]"),
    "demo": ("ssmkit.timeseries.cli", "demo", "S-Mamba vs DLinear on statsmodels' macrodata"),
}

_HELP = """usage: ssmkit <command> [args...]

commands:
  models [--domain D]            registered models with parameter counts
  fit|validate|test|predict --config FILE.yaml
                                 Lightning training/evaluation from a recipe in configs/
  bench <name>                   run a benchmark and write benchmarks/results/<name>.md
{verbs}  --version                      print the version
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        verbs = "".join(f"  {v:<31}{h}\n" for v, (_, _, h) in sorted(DOMAIN_VERBS.items()))
        print(_HELP.format(verbs=verbs))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version":
        print(f"ssmkit {ssmkit.__version__}")
        return 0

    from ssmkit.core import cli

    if command == "models":
        return cli.cmd_models(rest)
    if command == "bench":
        return cli.cmd_bench(rest)
    if command in cli.LIGHTNING_SUBCOMMANDS:
        return cli.cmd_lightning(command, rest)
    if command in DOMAIN_VERBS:
        module, function, _ = DOMAIN_VERBS[command]
        return int(getattr(importlib.import_module(module), function)(rest) or 0)
    print(f"ssmkit: unknown command {command!r}; run `ssmkit --help`.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
