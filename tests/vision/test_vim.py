"""Vim: middle class token, position-embedding resampling, and timm's model contract."""

from __future__ import annotations

import pytest
import torch

from ssmkit.vision.layers import resample_pos_embed
from ssmkit.vision.vim import VisionMamba

TINY = dict(img_size=32, patch_size=8, embed_dim=16, depth=3, d_state=4, num_classes=5, expand=1)


def _model(**kwargs) -> VisionMamba:
    torch.manual_seed(0)
    return VisionMamba(**{**TINY, **kwargs}).eval()


def test_middle_class_token_is_pooled() -> None:
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 16 + 1, 16)  # 4x4 patches + cls
    pooled = model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled, feats[:, 8])  # cls sits at M // 2 = 8
    # The class token really is inserted there: changing it changes only the logits via token 8.
    with torch.no_grad():
        model.cls_token.add_(1.0)
    assert not torch.allclose(model.forward_features(x)[:, 8], feats[:, 8])
    assert model(x).shape == (2, 5)


def test_backward_direction_gets_gradients() -> None:
    """Vim's CPU fallback silently dropped the backward scan; here every parameter learns."""
    model = _model().train()
    model(torch.randn(2, 3, 32, 32)).square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert any("_b" in n for n, _ in model.named_parameters())


def test_batch_consistency() -> None:
    model = _model()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-4, atol=1e-4)


def test_resample_pos_embed_keeps_cls_in_the_middle() -> None:
    pos = torch.zeros(1, 16 + 1, 4)
    pos[:, 8] = 7.0  # cls entry
    pos[:, :8] = 1.0
    pos[:, 9:] = 1.0  # constant patch field
    new = resample_pos_embed(pos, (6, 6), (4, 4), cls_position="middle")
    assert new.shape == (1, 37, 4)
    torch.testing.assert_close(new[:, 18], torch.full((1, 4), 7.0))  # new middle = 36 // 2
    patches = torch.cat([new[:, :18], new[:, 19:]], dim=1)
    torch.testing.assert_close(patches, torch.ones_like(patches), rtol=1e-5, atol=1e-5)
    assert resample_pos_embed(pos, (4, 4)) is pos
    first = resample_pos_embed(
        torch.cat([pos[:, 8:9], pos[:, :8], pos[:, 9:]], 1), (2, 2), cls_position="first"
    )
    torch.testing.assert_close(first[:, 0], torch.full((1, 4), 7.0))
    with pytest.raises(ValueError, match="old_grid"):
        resample_pos_embed(torch.zeros(1, 13, 4), (2, 2))


def test_resolution_change_strict_and_dynamic() -> None:
    model = _model()
    with pytest.raises(ValueError, match="dynamic_img_size"):
        model(torch.randn(1, 3, 48, 48))
    dyn = _model(dynamic_img_size=True)
    dyn.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(dyn(x), model(x))
    assert dyn(torch.randn(1, 3, 48, 40)).shape == (1, 5)
    # set_input_size resamples the parameter itself.
    model.set_input_size(48)
    assert model.pos_embed.shape == (1, 37, 16)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 5)
    torch.testing.assert_close(model.pos_embed[:, 18], dyn.pos_embed[:, 8])


def test_stride8_grid() -> None:
    model = _model(stride=4)  # the "+" layout scaled down: 8x8 patches at stride 4 -> 7x7
    assert model.patch_embed.grid_size == (7, 7)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 50, 16)


def test_grad_checkpointing_matches() -> None:
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        model = _model().train()
        model.set_grad_checkpointing(enable)
        model(x).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_forward_intermediates_and_prune() -> None:
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    final, feats = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [f.shape for f in feats] == [(2, 16, 4, 4)] * 3
    normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
    ff = model.forward_features(x)
    patches = torch.cat([ff[:, :8], ff[:, 9:]], dim=1).reshape(2, 4, 4, 16).permute(0, 3, 1, 2)
    torch.testing.assert_close(normed[0], patches)
    nlc = model.forward_intermediates(x, indices=2, output_fmt="NLC", intermediates_only=True)
    assert [f.shape for f in nlc] == [(2, 16, 16)] * 2
    pairs = model.forward_intermediates(
        x, indices=1, return_prefix_tokens=True, intermediates_only=True
    )
    torch.testing.assert_close(pairs[0][1], feats[-1].new_tensor(0) + pairs[0][1])
    assert pairs[0][1].shape == (2, 16)
    kept = model.prune_intermediate_layers([0, 1])
    assert kept == [0, 1] and len(model.layers) == 2
    assert isinstance(model.head, torch.nn.Identity)
    pruned = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    torch.testing.assert_close(pruned[1], feats[1])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[5])


def test_classifier_reset_and_info() -> None:
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    assert model.num_features == model.head_hidden_size == 16
    model.reset_classifier(0)
    assert model(x).shape == (2, 16)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 17, 16)
    model.reset_classifier(3, "avg")
    assert model(x).shape == (2, 3)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "max")
    nwd = model.no_weight_decay()
    assert {"pos_embed", "cls_token", "layers.0.mixer.A_log", "layers.0.mixer.A_b_log"} <= nwd
    assert model.feature_info[-1] == dict(module="layers.2", num_chs=16, reduction=8)


def test_bad_inputs_are_explained() -> None:
    model = _model()
    with pytest.raises(ValueError, match="in_chans=1"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="global_pool"):
        VisionMamba(**{**TINY, "global_pool": "max"})
    with pytest.raises(ValueError, match="class_token"):
        VisionMamba(**{**TINY, "class_token": False})
