"""Every YAML recipe in configs/ instantiates its task and data module through LightningCLI."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(c.parents[1])) for c in CONFIGS])
def test_config_instantiates(config: Path, tmp_path: Path) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config",
            str(config),
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
        ],
        save_config_callback=None,
    )
    assert isinstance(cli.model, LightningModule)
    assert isinstance(cli.datamodule, LightningDataModule)
    assert sum(p.numel() for p in cli.model.parameters()) > 0
