"""checkpoint_filter_fn on state dicts with the authors' exact key names and shapes, strict load.

The key lists follow the authors' code: hustvl/Vim ``models_mamba.VisionMamba`` with
``bimamba_type="v2"`` (``*-midclstok`` releases) and MzeroMiko/VMamba ``vmamba.VSSM`` v2
(``patchembed_version="v2"``, ``downsample_version="v3"``, ``forward_type="v05_noz"``,
``norm_layer="ln2d"``, ``ssm_conv_bias=False``; releases ``vssm1_*``, weights under ``"model"``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from ssmkit.vision import checkpoint_filter_fn
from ssmkit.vision.vim import VisionMamba
from ssmkit.vision.vmamba import VMamba


def vim_authors_state_dict(
    dim: int, depth: int, num_patches: int, num_classes: int, d_state: int = 16, expand: int = 2
) -> dict[str, torch.Tensor]:
    inner, rank = expand * dim, math.ceil(dim / 16)
    sd = {
        "cls_token": torch.randn(1, 1, dim),
        "pos_embed": torch.randn(1, num_patches + 1, dim),
        "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16),
        "patch_embed.proj.bias": torch.randn(dim),
        "head.weight": torch.randn(num_classes, dim),
        "head.bias": torch.randn(num_classes),
        "norm_f.weight": torch.randn(dim),
    }
    for i in range(depth):
        p = f"layers.{i}."
        sd[p + "norm.weight"] = torch.randn(dim)
        for s in ("", "_b"):
            sd[p + f"mixer.A{s}_log"] = torch.randn(inner, d_state)
            sd[p + f"mixer.D{s}"] = torch.randn(inner)
            sd[p + f"mixer.conv1d{s}.weight"] = torch.randn(inner, 1, 4)
            sd[p + f"mixer.conv1d{s}.bias"] = torch.randn(inner)
            sd[p + f"mixer.x_proj{s}.weight"] = torch.randn(rank + 2 * d_state, inner)
            sd[p + f"mixer.dt_proj{s}.weight"] = torch.randn(inner, rank)
            sd[p + f"mixer.dt_proj{s}.bias"] = torch.randn(inner)
        sd[p + "mixer.in_proj.weight"] = torch.randn(2 * inner, dim)
        sd[p + "mixer.out_proj.weight"] = torch.randn(dim, inner)
    return sd


def vmamba_authors_state_dict(
    dims: list[int],
    depths: list[int],
    d_state: int,
    ssm_ratio: float,
    num_classes: int,
    linear2d_4d: bool = False,
) -> dict[str, torch.Tensor]:
    c0 = dims[0]
    sd = {
        "patch_embed.0.weight": torch.randn(c0 // 2, 3, 3, 3),
        "patch_embed.0.bias": torch.randn(c0 // 2),
        "patch_embed.2.weight": torch.randn(c0 // 2),
        "patch_embed.2.bias": torch.randn(c0 // 2),
        "patch_embed.5.weight": torch.randn(c0, c0 // 2, 3, 3),
        "patch_embed.5.bias": torch.randn(c0),
        "patch_embed.7.weight": torch.randn(c0),
        "patch_embed.7.bias": torch.randn(c0),
        "classifier.norm.weight": torch.randn(dims[-1]),
        "classifier.norm.bias": torch.randn(dims[-1]),
        "classifier.head.weight": torch.randn(num_classes, dims[-1]),
        "classifier.head.bias": torch.randn(num_classes),
    }

    def lin(o: int, i: int) -> torch.Tensor:
        return torch.randn(o, i, 1, 1) if linear2d_4d else torch.randn(o, i)

    for i, (c, depth) in enumerate(zip(dims, depths)):
        inner, rank = int(ssm_ratio * c), math.ceil(c / 16)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            sd.update(
                {
                    p + "norm.weight": torch.randn(c),
                    p + "norm.bias": torch.randn(c),
                    p + "op.in_proj.weight": lin(inner, c),
                    p + "op.conv2d.weight": torch.randn(inner, 1, 3, 3),
                    p + "op.x_proj_weight": torch.randn(4, rank + 2 * d_state, inner),
                    p + "op.dt_projs_weight": torch.randn(4, inner, rank),
                    p + "op.dt_projs_bias": torch.randn(4, inner),
                    p + "op.A_logs": torch.randn(4 * inner, d_state),
                    p + "op.Ds": torch.randn(4 * inner),
                    p + "op.out_norm.weight": torch.randn(inner),
                    p + "op.out_norm.bias": torch.randn(inner),
                    p + "op.out_proj.weight": lin(c, inner),
                    p + "norm2.weight": torch.randn(c),
                    p + "norm2.bias": torch.randn(c),
                    p + "mlp.fc1.weight": lin(4 * c, c),
                    p + "mlp.fc1.bias": torch.randn(4 * c),
                    p + "mlp.fc2.weight": lin(c, 4 * c),
                    p + "mlp.fc2.bias": torch.randn(c),
                }
            )
        if i < len(dims) - 1:
            p = f"layers.{i}.downsample."
            sd[p + "1.weight"] = torch.randn(dims[i + 1], c, 3, 3)
            sd[p + "1.bias"] = torch.randn(dims[i + 1])
            sd[p + "3.weight"] = torch.randn(dims[i + 1])
            sd[p + "3.bias"] = torch.randn(dims[i + 1])
    return sd


VIM = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_classes=7)


def test_vim_authors_checkpoint_loads_strict() -> None:
    model = VisionMamba(**VIM)
    sd = vim_authors_state_dict(32, 2, 16, 7)
    out = checkpoint_filter_fn({"model": sd}, model)
    model.load_state_dict(out, strict=True)
    for k, v in sd.items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)
    # Idempotent on our own state dicts.
    model.load_state_dict(checkpoint_filter_fn(model.state_dict(), model), strict=True)


def test_vim_pos_embed_resampled_around_middle_token() -> None:
    sd = vim_authors_state_dict(32, 2, 16, 7)  # 4x4 grid, cls at 8
    plus = VisionMamba(**{**VIM, "stride": 8})  # "+" layout: 7x7 grid, cls at 24
    out = checkpoint_filter_fn(sd, plus)
    plus.load_state_dict(out, strict=True)
    assert plus.pos_embed.shape == (1, 50, 32)
    torch.testing.assert_close(plus.pos_embed[0, 24], sd["pos_embed"][0, 8])
    big = VisionMamba(**{**VIM, "img_size": 96})  # 6x6 grid, cls at 18
    big.load_state_dict(checkpoint_filter_fn(sd, big), strict=True)
    torch.testing.assert_close(big.pos_embed[0, 18], sd["pos_embed"][0, 8])


def test_vim_wrong_patch_size_is_explained() -> None:
    model = VisionMamba(**{**VIM, "patch_size": 8, "img_size": 32})
    with pytest.raises(ValueError, match="patch size"):
        checkpoint_filter_fn(vim_authors_state_dict(32, 2, 16, 7), model)


@pytest.mark.parametrize("linear2d_4d", [False, True])
def test_vmamba_v2_authors_checkpoint_loads_strict(linear2d_4d: bool) -> None:
    dims, depths = [16, 32], [1, 2]
    model = VMamba(dims=dims, depths=depths, d_state=1, ssm_ratio=1.0, num_classes=5)
    sd = vmamba_authors_state_dict(dims, depths, 1, 1.0, 5, linear2d_4d)
    out = checkpoint_filter_fn({"model": sd, "epoch": 3}, model)
    model.load_state_dict(out, strict=True)
    ours = model.state_dict()
    torch.testing.assert_close(ours["stem.norm2.bias"], sd["patch_embed.7.bias"])
    torch.testing.assert_close(
        ours["stages.1.downsample.conv.weight"], sd["layers.0.downsample.1.weight"]
    )
    torch.testing.assert_close(
        ours["stages.1.blocks.1.op.A_logs"], sd["layers.1.blocks.1.op.A_logs"]
    )
    torch.testing.assert_close(
        ours["stages.0.blocks.0.mlp.fc1.weight"],
        sd["layers.0.blocks.0.mlp.fc1.weight"].reshape(64, 16),
    )
    torch.testing.assert_close(ours["head.weight"], sd["classifier.head.weight"])
    # A model with an SS2D conv bias gets zeros for the bias the checkpoint does not have.
    biased = VMamba(
        dims=dims, depths=depths, d_state=1, ssm_ratio=1.0, num_classes=5, conv_bias=True
    )
    out = checkpoint_filter_fn(sd, biased)
    biased.load_state_dict(out, strict=True)
    assert biased.stages[0].blocks[0].op.conv2d.bias.abs().sum() == 0
    model.load_state_dict(checkpoint_filter_fn(model.state_dict(), model), strict=True)


def test_unknown_layouts_are_rejected() -> None:
    with pytest.raises(TypeError, match="Vim and VMamba"):
        checkpoint_filter_fn({}, torch.nn.Linear(2, 2))
    model = VMamba(dims=[8, 16], depths=[1, 1], d_state=1)
    with pytest.raises(ValueError, match="Unrecognised"):
        checkpoint_filter_fn({"layers.0.weird": torch.zeros(1)}, model)


def test_timm_pretrained_file_with_new_head(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    path = tmp_path / "vim_t_midclstok.pth"
    sd = vim_authors_state_dict(32, 2, 16, 1000)
    torch.save({"model": sd, "args": argparse.Namespace(model="vim_tiny")}, path)  # authors' layout
    model = timm.create_model(
        "vim_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=3,
        embed_dim=32,
        depth=2,
        img_size=96,
    )
    assert model.head.weight.shape == (3, 32)
    torch.testing.assert_close(model.layers[1].mixer.A_b_log.data, sd["layers.1.mixer.A_b_log"])
    torch.testing.assert_close(model.pos_embed[0, 18].data, sd["pos_embed"][0, 8])
