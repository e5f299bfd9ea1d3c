"""timm conformance: registration on import, create_model, features_only, pretrained_cfg, optimizers."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip(
    "timm", reason="timm is the vision extra; these tests check its contract"
)

import ssmkit  # noqa: E402
import ssmkit.vision  # noqa: E402  (registers the names with timm)

NAMES = [
    "vim_tiny_patch16_224",
    "vim_small_patch16_224",
    "vim_base_patch16_224",
    "vim_tiny_patch16_stride8_224",
    "vim_small_patch16_stride8_224",
    "vmamba_tiny",
    "vmamba_small",
    "vmamba_base",
]
VIM_TINY = dict(img_size=32, patch_size=8, embed_dim=16, depth=3, d_state=4, expand=1)
VMAMBA_TINY = dict(dims=8, depths=(1, 1, 1, 1), d_state=1)


def test_names_are_registered_with_timm() -> None:
    assert set(NAMES) <= set(timm.list_models("vim_*") + timm.list_models("vmamba_*"))
    assert "vim_tiny_patch16_224.hustvl_in1k" in timm.list_pretrained("vim_*")
    cfg = timm.get_pretrained_cfg("vim_tiny_patch16_224")
    assert cfg.hf_hub_id == "hustvl/Vim-tiny-midclstok" and cfg.classifier == "head"
    # The published file names (hustvl Hugging Face repositories, MzeroMiko/VMamba releases).
    files = {
        "vim_tiny_patch16_224": "vim_t_midclstok_76p1acc.pth",
        "vim_tiny_patch16_stride8_224": "vim_t_midclstok_ft_78p3acc.pth",
        "vim_small_patch16_224": "vim_s_midclstok_80p5acc.pth",
        "vim_small_patch16_stride8_224": "vim_s_midclstok_ft_81p6acc.pth",
        "vim_base_patch16_224": "vim_b_midclstok_81p9acc.pth",
    }
    for name, file in files.items():
        assert timm.get_pretrained_cfg(name).hf_hub_filename == file, name
    release = "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/"
    assert timm.get_pretrained_cfg("vmamba_tiny").url == (
        release + "vssm1_tiny_0230s_ckpt_epoch_264.pth"
    )
    assert timm.get_pretrained_cfg("vmamba_small").url.endswith(
        "vssm1_small_0229s_ckpt_epoch_240.pth"
    )


def test_published_sizes() -> None:
    """Parameter counts of the published configurations (built on the meta device)."""
    expected = {"vision.vim_tiny": 7.1, "vision.vim_small": 25.8, "vision.vmamba_tiny": 30.2}
    for name, millions in expected.items():
        count = ssmkit.core.registry.count_parameters(name)
        assert abs(count / 1e6 - millions) < 0.6, (name, count)
    with torch.device("meta"):
        plus = timm.create_model("vim_tiny_patch16_stride8_224")
    assert plus.pos_embed.shape == (1, 27 * 27 + 1, 192)


def test_create_model_and_pretrained_cfg() -> None:
    model = timm.create_model("vim_tiny_patch16_224", num_classes=10, **VIM_TINY)
    assert model.pretrained_cfg["first_conv"] == "patch_embed.proj"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    state = model.state_dict()
    assert model.pretrained_cfg["classifier"] + ".weight" in state
    assert model.pretrained_cfg["first_conv"] + ".weight" in state
    vm = timm.create_model("vmamba_tiny", num_classes=0, **VMAMBA_TINY)
    assert vm(torch.randn(1, 3, 64, 64)).shape == (1, vm.num_features)
    assert "stem.conv1.weight" in vm.state_dict()


def test_in_chans_adaptation() -> None:
    model = timm.create_model("vim_tiny_patch16_224", in_chans=1, num_classes=2, **VIM_TINY)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)


def test_features_only_matches_feature_info() -> None:
    vm = timm.create_model("vmamba_tiny", features_only=True, **VMAMBA_TINY)
    feats = vm(torch.randn(1, 3, 64, 64))
    assert vm.feature_info.channels() == [8, 16, 32, 64]
    assert vm.feature_info.reduction() == [4, 8, 16, 32]
    for f, c, r in zip(feats, vm.feature_info.channels(), vm.feature_info.reduction()):
        assert f.shape == (1, c, 64 // r, 64 // r)
    vim = timm.create_model(
        "vim_tiny_patch16_224", features_only=True, out_indices=(0, 2), **VIM_TINY
    )
    feats = vim(torch.randn(2, 3, 32, 32))
    assert [f.shape for f in feats] == [(2, 16, 4, 4)] * 2
    assert vim.feature_info.reduction() == [8, 8]


def test_layer_decay_optimizer_uses_group_matcher() -> None:
    from timm.optim import create_optimizer_v2

    model = timm.create_model("vim_tiny_patch16_224", num_classes=3, **VIM_TINY)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) == 3 + 2  # stem, 3 blocks, norm/head
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.pos_embed) not in decayed
    assert id(model.layers[0].mixer.A_log) not in decayed
    assert id(model.layers[0].mixer.in_proj.weight) in decayed


def test_register_timm_is_explicit_and_idempotent() -> None:
    assert ssmkit.vision.timm_available()
    ssmkit.vision.register_timm()
    assert "vim_tiny_patch16_224" in timm.list_models("vim_*")
