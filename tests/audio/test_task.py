"""SeparationTask: a short Lightning fit with clipping and warm-up, checkpoint usable by the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("soundfile")

from ssmkit.audio.io import write_audio  # noqa: E402
from ssmkit.audio.separate import load_separator  # noqa: E402
from ssmkit.audio.task import SeparationTask, warmup_cosine  # noqa: E402


def test_warmup_cosine_schedule() -> None:
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_fit_learns_and_checkpoint_loads(tmp_path: Path) -> None:
    from ssmkit.audio.data import MixtureDataModule

    t = torch.arange(4000) / 8000
    for s, f0 in enumerate([120.0, 300.0, 520.0]):
        write_audio(
            tmp_path / "spk" / f"s{s}" / "a.wav", 0.2 * torch.sin(2 * torch.pi * f0 * t), 8000
        )
    dm = MixtureDataModule(train=str(tmp_path / "spk"), val=str(tmp_path / "spk"),
                           segment=0.05, epoch_size=32, val_size=8, batch_size=4)  # fmt: skip
    tiny = {"n_filters": 16, "d_model": 16, "n_layers": 1, "d_state": 4}
    task = SeparationTask("audio.mamba_tasnet_xs", tiny, lr=3e-3, warmup_steps=4, clip_grad=5.0)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, enable_model_summary=False)  # fmt: skip
    first = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/si_snri"]
    trainer.fit(task, datamodule=dm)
    last = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/si_snri"]
    assert last > first + 1.0, (first, last)
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert torch.load(ckpt, weights_only=False)["separator_format"] == 3
    model, rate = load_separator(ckpt, sample_rate=8000)
    x = torch.randn(1, 333)
    with torch.no_grad():
        torch.testing.assert_close(model(x), task.model.eval()(x))


def test_bf16_autocast_forward_is_float32() -> None:
    tiny = {"n_filters": 16, "d_model": 16, "n_layers": 1, "d_state": 4}
    task = SeparationTask("audio.mamba_tasnet_xs", tiny, bf16=True)
    out = task(torch.randn(2, 160))
    assert out.dtype == torch.float32 and out.shape == (2, 2, 160)
    with pytest.raises(ValueError, match=r"mixture \(B, T\), sources"):
        task.training_step((torch.randn(2, 160), torch.randn(2, 160)), 0)


def test_bf16_training_step_dual_path() -> None:
    tiny = {"n_filters": 16, "n_layers": 1, "chunk_size": 8, "d_state": 4}
    task = SeparationTask("audio.dpmamba_xs", tiny, bf16=True)
    loss = task.training_step((torch.randn(2, 203), torch.randn(2, 2, 203)), 0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = [p.grad for p in task.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_lightning_checkpoints_from_before_the_dpmamba_wiring_fix_load_as_trained(
    tmp_path: Path,
) -> None:
    tiny = {"n_filters": 16, "n_layers": 1, "chunk_size": 8, "d_state": 4}
    legacy_wiring = {"input_norm": "cln", "skip_around_intra": True}
    torch.manual_seed(0)
    task = SeparationTask("audio.dpmamba_xs", tiny)
    task.model = legacy = SeparationTask("audio.dpmamba_xs", tiny | legacy_wiring).model.eval()
    path = tmp_path / "old.ckpt"  # what Lightning wrote before "separator_format" existed
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    loaded = SeparationTask.load_from_checkpoint(path).eval()
    assert loaded.hparams.model_kwargs == tiny | legacy_wiring
    x = torch.randn(1, 203)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), legacy(x))
        torch.testing.assert_close(load_separator(path, sample_rate=8000)[0](x), legacy(x))


def test_lightning_mamba_tasnet_checkpoints_with_projection_biases_load_as_trained(
    tmp_path: Path,
) -> None:
    tiny = {"n_filters": 16, "d_model": 16, "n_layers": 1, "d_state": 4}
    torch.manual_seed(0)
    task = SeparationTask("audio.mamba_tasnet_xs", tiny)
    task.model = legacy = SeparationTask(
        "audio.mamba_tasnet_xs", tiny | {"projection_bias": True}
    ).model.eval()
    path = tmp_path / "format2.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "separator_format": 2, "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    loaded = SeparationTask.load_from_checkpoint(path).eval()
    assert loaded.hparams.model_kwargs == tiny | {"projection_bias": True}
    x = torch.randn(1, 203)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), legacy(x))
