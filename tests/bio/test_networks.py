"""U-Mamba Bot/Enc and SegMamba: shapes (2-D, 3-D, odd sizes), gradients, fp32 SSM under bf16, bad input."""

from __future__ import annotations

import pytest
import torch

from ssmkit.bio import MambaLayer, SegMamba, UMambaBot, UMambaEnc

TINY = dict(
    channels=(4, 8, 16),
    strides=(1, 2, 2),
    n_conv_per_stage=1,
    n_conv_per_stage_decoder=1,
    d_state=4,
)


@pytest.mark.parametrize("cls", [UMambaBot, UMambaEnc])
@pytest.mark.parametrize(
    "shape",
    [(2, 2, 32, 32), (1, 2, 24, 40), (1, 2, 16, 16, 16), (1, 2, 12, 20, 8)],
    ids=["2d", "2d-odd", "3d", "3d-odd"],
)
def test_umamba_shapes(cls: type, shape: tuple[int, ...]) -> None:
    net = cls(spatial_dims=len(shape) - 2, in_channels=2, out_channels=3, **TINY).eval()
    with torch.no_grad():
        y = net(torch.randn(shape))
    assert y.shape == (shape[0], 3, *shape[2:])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("cls", [UMambaBot, UMambaEnc])
def test_umamba_every_parameter_gets_a_gradient(cls: type) -> None:
    net = cls(spatial_dims=3, in_channels=1, out_channels=2, **TINY)
    net(torch.randn(2, 1, 8, 16, 12)).logsumexp(1).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_umamba_layout() -> None:
    bot = UMambaBot(spatial_dims=2, in_channels=1, out_channels=2, **TINY)
    enc = UMambaEnc(spatial_dims=2, in_channels=1, out_channels=2, **TINY)
    assert list(bot.mamba_layers) == ["2"]  # bottleneck only
    assert list(enc.mamba_layers) == ["0", "1", "2"]  # after every encoder stage
    assert bot.divisor == enc.divisor == 4


def test_mamba_layer_runs_fp32_under_bf16_autocast() -> None:
    net = UMambaEnc(spatial_dims=2, in_channels=1, out_channels=2, **TINY)
    seen = []
    for layer in net.modules():
        if isinstance(layer, MambaLayer):
            layer.mamba.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    x = torch.randn(2, 1, 32, 32) * 50  # large activations: bf16 would lose the SSM state
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
        loss = y.float().logsumexp(1).mean()
    loss.backward()
    assert seen and all(dtype == torch.float32 for dtype in seen)
    assert torch.isfinite(y.float()).all()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    mamba_grads = [p.grad.dtype for layer in net.mamba_layers.values() for p in layer.parameters()]
    assert set(mamba_grads) == {torch.float32}


def test_umamba_bad_inputs_raise() -> None:
    net = UMambaBot(spatial_dims=3, in_channels=1, out_channels=2, **TINY)
    with pytest.raises(ValueError, match="multiple of the network's total stride"):
        net(torch.randn(1, 1, 16, 17, 16))
    with pytest.raises(ValueError, match="in_channels=1"):
        net(torch.randn(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="spatial_dims=3"):
        net(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="spatial_dims must be one of"):
        UMambaBot(spatial_dims=4)
    with pytest.raises(ValueError, match="strides needs one entry per stage"):
        UMambaBot(channels=(4, 8), strides=(1, 2, 2))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        UMambaBot(kernel_size=2, **{k: v for k, v in TINY.items()})
    with pytest.raises(ValueError, match="out_channels"):
        UMambaEnc(out_channels=0)


@pytest.mark.parametrize("cls", [UMambaBot, UMambaEnc])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_umamba_refuses_a_single_voxel_bottleneck(cls: type, train: bool) -> None:
    """Total stride 4 on a 4x4 input: instance norm over one voxel (train: torch's bare error;
    eval: all zeros, the bottleneck silently dropped) is refused with the fix instead."""
    net = cls(spatial_dims=2, in_channels=1, out_channels=2, **TINY).train(train)
    with pytest.raises(ValueError, match=r"single voxel at stride \(4, 4\).*e\.g\. 8x4"):
        net(torch.randn(1, 1, 4, 4))
    assert net(torch.randn(1, 1, 8, 4)).shape == (1, 2, 8, 4)  # twice the stride on one axis


def test_segmamba_shapes_and_gradients() -> None:
    net = SegMamba(
        in_channels=2,
        out_channels=3,
        feature_size=(4, 8, 8, 16),
        depths=(1, 1, 1, 1),
        hidden_size=16,
        d_state=4,
    )
    y = net(torch.randn(1, 2, 32, 16, 16))
    assert y.shape == (1, 3, 32, 16, 16)
    y.logsumexp(1).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.eval()(torch.randn(1, 2, 16, 32, 16) * 30)
    assert torch.isfinite(out.float()).all()


def test_segmamba_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="spatial_dims must be one of \\(3,\\)"):
        SegMamba(spatial_dims=2)
    with pytest.raises(ValueError, match="feature_size must be 4"):
        SegMamba(feature_size=(8, 16))
    net = SegMamba(
        in_channels=1,
        out_channels=2,
        feature_size=(4, 8, 8, 16),
        depths=(1, 1, 1, 1),
        hidden_size=16,
        d_state=4,
    )
    with pytest.raises(ValueError, match="multiple of the network's total stride"):
        net(torch.randn(1, 1, 32, 24, 16))
    with pytest.raises(ValueError, match=r"single voxel at stride \(16, 16, 16\).*32x16x16"):
        net(torch.randn(1, 1, 16, 16, 16))
