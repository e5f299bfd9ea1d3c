"""The domain-independent part of the ``ssmkit`` command line.

``ssmkit models``, ``ssmkit bench <name>`` and ``ssmkit fit|validate|test|predict --config ...``
(LightningCLI: the YAML names a LightningModule task and a LightningDataModule by class path).
Domain verbs (``ssmkit forecast``, ``ssmkit separate``, ...) are listed in ``ssmkit/__main__.py``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from ssmkit.core.optional import require
from ssmkit.core.registry import DOMAINS, count_parameters, list_models

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder of a source checkout (benchmarks are not shipped in wheels)."""
    return Path(__file__).resolve().parent.parent / "benchmarks"


def available_benchmarks() -> list[str]:
    folder = benchmarks_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def cmd_models(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssmkit models", description="List registered models.")
    parser.add_argument("--domain", choices=DOMAINS, help="only this domain's models")
    parser.add_argument("--pattern", help="shell-style filter, e.g. '*vim*'")
    parser.add_argument("--no-params", action="store_true", help="skip parameter counts")
    args = parser.parse_args(argv)
    names = list_models(domain=args.domain, pattern=args.pattern)
    width = max((len(n) for n in names), default=10)
    for name in names:
        params = "" if args.no_params else f"{count_parameters(name) / 1e6:10.2f}M"
        print(f"{name:<{width}}  {params}")
    return 0


def cmd_bench(argv: list[str]) -> int:
    names = available_benchmarks()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ssmkit bench <name> [args...]\n\navailable: " + (", ".join(names) or "none"))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        where = benchmarks_dir()
        raise SystemExit(
            f"Unknown benchmark {name!r}. Available in {where}: {', '.join(names) or 'none'}. "
            "Benchmarks ship with a source checkout of ssmkit, not with the wheel."
        )
    sys.argv = [str(benchmarks_dir() / f"{name}.py"), *rest]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


def cmd_lightning(subcommand: str, argv: list[str]) -> int:
    """LightningCLI over any task/data module named by class path in the YAML config."""
    require("lightning", "train")
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=[subcommand, *argv],
        save_config_kwargs={"overwrite": True},
    )
    return 0
