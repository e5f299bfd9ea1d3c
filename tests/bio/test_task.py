"""SegmentationTask: training raises Dice, sliding-window inference, bf16 autocast, bad arguments."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("monai", reason="the bio extra (MONAI) is not installed")
pytest.importorskip("lightning", reason="the train extra (Lightning) is not installed")

from ssmkit.bio.synthetic import synthetic_case
from ssmkit.bio.task import SegmentationTask

TINY = dict(
    channels=(4, 8, 16),
    strides=(1, 2, 2),
    n_conv_per_stage=1,
    n_conv_per_stage_decoder=1,
    d_state=4,
)


def _foreground_dice(logits: torch.Tensor, label: torch.Tensor) -> float:
    pred = logits.argmax(1, keepdim=True) == 1
    truth = label == 1
    return float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()).clamp_min(1))


def _batch_2d(n: int, seed: int) -> dict[str, torch.Tensor]:
    cases = [synthetic_case((32, 32), num_objs=4, noise_max=0.2, seed=seed + i) for i in range(n)]
    image = torch.stack([torch.as_tensor(im)[None] for im, _ in cases])
    label = torch.stack([torch.as_tensor(lb)[None].float() for _, lb in cases])
    return {"image": image, "label": label}


def test_a_few_training_steps_raise_dice() -> None:
    small = dict(TINY, channels=(4, 8), strides=(1, 2))
    task = SegmentationTask("bio.umamba_bot", dict(spatial_dims=2, **small), roi_size=(32, 32))
    train, held_out = _batch_2d(4, seed=0), _batch_2d(4, seed=100)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-2)
    with torch.no_grad():
        before = _foreground_dice(task(held_out["image"]), held_out["label"])
    for step in range(40):
        opt.zero_grad()
        loss = task.training_step(train, step)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = _foreground_dice(task.eval()(held_out["image"]), held_out["label"])
    assert after > 0.85 and after > before + 0.1, (before, after)


def test_sliding_window_on_a_volume_larger_than_the_patch() -> None:
    task = SegmentationTask(
        "bio.umamba_enc",
        dict(spatial_dims=3, out_channels=3, **TINY),
        roi_size=(8, 8, 8),
        sw_batch_size=4,
    ).eval()
    volume = torch.randn(1, 1, 20, 12, 9)  # not a multiple of the stride or the ROI
    with torch.no_grad():
        logits = task.sliding_window(volume)
        labels = task.predict_step({"image": volume}, 0)
    assert logits.shape == (1, 3, 20, 12, 9) and torch.isfinite(logits).all()
    assert labels.shape == (1, 1, 20, 12, 9) and labels.max() < 3
    with torch.no_grad():  # a window-sized input gives the plain forward
        patch = volume[..., :8, :8, :8]
        torch.testing.assert_close(task.sliding_window(patch), task(patch), rtol=1e-4, atol=1e-5)


def test_validation_step_measures_dice() -> None:
    task = SegmentationTask("bio.umamba_bot", dict(spatial_dims=2, **TINY), roi_size=(16, 16))
    batch = _batch_2d(1, seed=3)
    logged = {}
    task.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    with torch.no_grad():
        task.validation_step(batch, 0)
    task.on_validation_epoch_end()
    assert 0.0 <= logged["val_dice"] <= 1.0 and logged["val_loss"] > 0


def test_bf16_autocast_training_step_has_no_nan() -> None:
    task = SegmentationTask("bio.umamba_enc", dict(spatial_dims=2, **TINY), roi_size=(32, 32))
    batch = _batch_2d(2, seed=7)
    batch["image"] = batch["image"] * 100  # large activations stress the bf16 path
    opt = torch.optim.SGD(task.parameters(), lr=1e-2, momentum=0.9)
    for step in range(3):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = task.training_step(batch, step)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)
        opt.step()
    assert all(p.dtype == torch.float32 for p in task.parameters())


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="multiple of the network's stride 4"):
        SegmentationTask("bio.umamba_bot", dict(spatial_dims=2, **TINY), roi_size=(30, 32))
    with pytest.raises(ValueError, match="needs 2 entries"):
        SegmentationTask("bio.umamba_bot", dict(spatial_dims=2, **TINY), roi_size=(32, 32, 32))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        SegmentationTask(
            "bio.umamba_bot", dict(spatial_dims=2, **TINY), roi_size=(32, 32), optimizer="lbfgs"
        )
    with pytest.raises(TypeError, match="registry name"):
        SegmentationTask(model=3)
