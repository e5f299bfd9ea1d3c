"""VMamba: hierarchical SS2D backbone, timm's model contract, any input size."""

from __future__ import annotations

import pytest
import torch

from ssmkit.vision.vmamba import VMamba

TINY = dict(dims=8, depths=(1, 1), d_state=2, num_classes=4)


def _model(**kwargs) -> VMamba:
    torch.manual_seed(0)
    return VMamba(**{**TINY, **kwargs}).eval()


def test_shapes_and_any_resolution() -> None:
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    assert model.forward_features(x).shape == (2, 16, 2, 2)
    assert model(x).shape == (2, 4)
    assert model(torch.randn(1, 3, 24, 40)).shape == (1, 4)
    assert model.num_features == model.head_hidden_size == 16


def test_every_parameter_learns() -> None:
    model = _model(conv_bias=True).train()
    model(torch.randn(2, 3, 16, 16)).square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_intermediates_features_and_prune() -> None:
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    final, feats = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 4, 4), (2, 16, 2, 2)]
    assert [i["reduction"] for i in model.feature_info] == [4, 8]
    nhwc = model.forward_intermediates(x, indices=[0], output_fmt="NHWC", intermediates_only=True)
    torch.testing.assert_close(nhwc[0], feats[0].permute(0, 2, 3, 1))
    normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
    torch.testing.assert_close(normed[0], final)
    assert model.prune_intermediate_layers([0]) == [0]
    assert len(model.stages) == 1 and model.num_features == 8
    torch.testing.assert_close(model.forward_intermediates(x, intermediates_only=True)[0], feats[0])


def test_grad_checkpointing_matches() -> None:
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for enable in (False, True):
        model = _model().train()
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing is enable
        model(x).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_classifier_and_groups() -> None:
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    model.reset_classifier(0)
    assert model(x).shape == (2, 16)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 16, 2, 2)
    assert model.forward_head(model.forward_features(x), pre_logits=True).dim() == 4
    assert {"stages.0.blocks.0.op.A_logs", "stages.0.blocks.0.op.Ds"} <= model.no_weight_decay()
    assert set(model.group_matcher()) == {"stem", "blocks"}
    with pytest.raises(ValueError, match="dims"):
        VMamba(dims=[8, 16, 32], depths=(1, 1))
    with pytest.raises(ValueError, match="global_pool"):
        VMamba(**{**TINY, "global_pool": "token"})
