"""nnMamba: shapes (2-D, 3-D, odd sizes), the shared flip-averaged Mamba, gradients, bf16, bad input."""

from __future__ import annotations

import pytest
import torch

from ssmkit.bio import FlipMambaLayer, NNMamba
from ssmkit.core.registry import create_model

TINY = dict(channels=4, blocks=2, d_state=4)


@pytest.mark.parametrize(
    "shape", [(2, 2, 32, 48), (1, 2, 16, 32, 16), (1, 2, 48, 16, 32)], ids=["2d", "3d", "3d-odd"]
)
def test_shapes(shape: tuple[int, ...]) -> None:
    net = NNMamba(len(shape) - 2, in_channels=2, out_channels=3, **TINY).eval()
    with torch.no_grad():
        y = net(torch.randn(shape))
    assert y.shape == (shape[0], 3, *shape[2:]) and torch.isfinite(y).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_head_before_the_last_upsampling_equals_the_paper_order(dims: int) -> None:
    """The network runs its 1x1 head before the final x2 interpolation; that must equal the
    paper's order (upsample the decoder features, then the head), bias included."""
    net = NNMamba(dims, 1, 3, **TINY).eval()
    torch.nn.init.normal_(net.head.bias)
    features = {}
    net.head.register_forward_hook(lambda m, args, out: features.update(y=args[0]))
    x = torch.randn(2, 1, *([32] * dims))
    with torch.no_grad():
        out = net(x)
        paper = net.head(net._up(features["y"]))
    assert torch.allclose(out, paper, atol=1e-5), (out - paper).abs().max()


def test_one_mamba_shared_per_stage_and_every_parameter_gets_a_gradient() -> None:
    net = NNMamba(3, 1, 2, channels=4, blocks=3, d_state=4)
    for stage in net.stages:
        layers = [block.mamba for block in stage]
        assert layers[0] is None  # the strided first block has no Mamba
        assert layers[1] is layers[2] and isinstance(layers[1], FlipMambaLayer)
    assert sum(isinstance(m, FlipMambaLayer) for m in net.modules()) == 3
    net(torch.randn(2, 1, 32, 16, 16)).logsumexp(1).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_flip_layer_averages_the_four_flips() -> None:
    """With the 1x1 projections made identities, the layer is x + mean of the 4 flipped scans."""
    torch.manual_seed(0)
    layer = FlipMambaLayer(2, 4, d_state=4).eval()
    for proj in (layer.proj_in, layer.proj_out):
        conv, bn, _ = proj
        torch.nn.init.eye_(conv.weight.view(4, 4))
        bn.reset_parameters()
        bn.eps = 0.0
    x = torch.rand(1, 4, 3, 5)  # >= 0, so the ReLUs pass it through
    tokens = x.flatten(2).transpose(1, 2)
    flips = [(), (1,), (2,), (1, 2)]
    scans = [layer.mamba(tokens.flip(d)).flip(d) if d else layer.mamba(tokens) for d in flips]
    expected = (torch.stack(scans).mean(0).transpose(1, 2).reshape(x.shape) + x).relu()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)
    assert not torch.allclose(scans[0], scans[1])  # the flips really differ


def test_registry_and_bf16_autocast() -> None:
    net = create_model("bio.nnmamba", spatial_dims=2, **TINY)
    assert isinstance(net, NNMamba)
    x = torch.randn(2, 1, 32, 32) * 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
        loss = y.float().logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(y.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_bad_inputs_raise() -> None:
    net = NNMamba(3, 1, 2, **TINY)
    with pytest.raises(ValueError, match="multiple of the network's total stride"):
        net(torch.randn(1, 1, 32, 24, 16))
    with pytest.raises(ValueError, match="single voxel at stride"):
        net(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="in_channels=1"):
        net(torch.randn(1, 2, 32, 16, 16))
    with pytest.raises(ValueError, match="blocks must be a positive int"):
        NNMamba(blocks=0)
    with pytest.raises(ValueError, match="spatial_dims must be one of"):
        NNMamba(spatial_dims=1)
