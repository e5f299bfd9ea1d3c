"""Register Vim and VMamba in timm's model registry.

``import ssmkit.vision`` imports this module when timm is installed, after which
``timm.create_model("vim_tiny_patch16_224", num_classes=10)``, ``features_only=True``,
``pretrained_cfg_overlay=dict(file="vim_t_midclstok_76p1acc.pth")`` etc. work like any timm model.
Without timm, ``ssmkit.vision.register_timm()`` explains what to install.

Vim: Zhu et al., "Vision Mamba" (ICML 2024), https://arxiv.org/abs/2401.09417.
VMamba: Liu et al., "VMamba: Visual State Space Model" (NeurIPS 2024), https://arxiv.org/abs/2401.10166.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ssmkit.vision.convert import checkpoint_filter_fn
from ssmkit.vision.vim import VIM_CONFIGS, VisionMamba
from ssmkit.vision.vmamba import VMAMBA_CONFIGS, VMamba

__all__ = ["default_cfgs"]


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


def _vmamba_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(
        first_conv="stem.conv1",
        pool_size=(7, 7),
        fixed_input_size=False,
        license="mit",
        **kwargs,
    )


# Published file names: hustvl/Vim README and its Hugging Face repositories (Vim-tiny-midclstok holds
# vim_t_midclstok_76p1acc.pth and vim_t_midclstok_ft_78p3acc.pth, Vim-small-midclstok the two
# vim_s_* files, Vim-base-midclstok vim_b_midclstok_81p9acc.pth); MzeroMiko/VMamba release "#v2cls".
_VMAMBA_RELEASE = "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/"

default_cfgs = generate_default_cfgs(
    {
        "vim_tiny_patch16_224.hustvl_in1k": _cfg(
            hf_hub_id="hustvl/Vim-tiny-midclstok", hf_hub_filename="vim_t_midclstok_76p1acc.pth"
        ),
        "vim_small_patch16_224.hustvl_in1k": _cfg(
            hf_hub_id="hustvl/Vim-small-midclstok", hf_hub_filename="vim_s_midclstok_80p5acc.pth"
        ),
        "vim_base_patch16_224.hustvl_in1k": _cfg(
            hf_hub_id="hustvl/Vim-base-midclstok", hf_hub_filename="vim_b_midclstok_81p9acc.pth"
        ),
        "vim_tiny_patch16_stride8_224.hustvl_in1k": _cfg(
            hf_hub_id="hustvl/Vim-tiny-midclstok", hf_hub_filename="vim_t_midclstok_ft_78p3acc.pth"
        ),
        "vim_small_patch16_stride8_224.hustvl_in1k": _cfg(
            hf_hub_id="hustvl/Vim-small-midclstok",
            hf_hub_filename="vim_s_midclstok_ft_81p6acc.pth",
        ),
        # VMamba v2 weights are GitHub release assets (tag "#v2cls", weights under "model"); offline:
        # pretrained=True, pretrained_cfg_overlay=dict(file="vssm1_tiny_0230s_ckpt_epoch_264.pth").
        "vmamba_tiny.in1k": _vmamba_cfg(
            url=_VMAMBA_RELEASE + "vssm1_tiny_0230s_ckpt_epoch_264.pth"
        ),
        "vmamba_small.in1k": _vmamba_cfg(
            url=_VMAMBA_RELEASE + "vssm1_small_0229s_ckpt_epoch_240.pth"
        ),
        "vmamba_base.in1k": _vmamba_cfg(
            url=_VMAMBA_RELEASE + "vssm1_base_0229s_ckpt_epoch_225.pth"
        ),
    }
)


def _create_vim(variant: str, pretrained: bool = False, **kwargs: Any) -> VisionMamba:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        VisionMamba,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _create_vmamba(variant: str, pretrained: bool = False, **kwargs: Any) -> VMamba:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        VMamba,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


@register_model
def vim_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionMamba:
    """Vim-Ti (D 192, 24 bidirectional Mamba blocks, middle class token)."""
    args = dict(patch_size=16, **VIM_CONFIGS["tiny"])
    return _create_vim("vim_tiny_patch16_224", pretrained, **{**args, **kwargs})


@register_model
def vim_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionMamba:
    """Vim-S (D 384, 24 blocks)."""
    args = dict(patch_size=16, **VIM_CONFIGS["small"])
    return _create_vim("vim_small_patch16_224", pretrained, **{**args, **kwargs})


@register_model
def vim_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionMamba:
    """Vim-B (D 768, 24 blocks)."""
    args = dict(patch_size=16, **VIM_CONFIGS["base"])
    return _create_vim("vim_base_patch16_224", pretrained, **{**args, **kwargs})


@register_model
def vim_tiny_patch16_stride8_224(pretrained: bool = False, **kwargs: Any) -> VisionMamba:
    """Vim-Ti+ (16x16 patches at stride 8: 27 x 27 tokens at 224^2)."""
    args = dict(patch_size=16, stride=8, **VIM_CONFIGS["tiny"])
    return _create_vim("vim_tiny_patch16_stride8_224", pretrained, **{**args, **kwargs})


@register_model
def vim_small_patch16_stride8_224(pretrained: bool = False, **kwargs: Any) -> VisionMamba:
    """Vim-S+ (16x16 patches at stride 8)."""
    args = dict(patch_size=16, stride=8, **VIM_CONFIGS["small"])
    return _create_vim("vim_small_patch16_stride8_224", pretrained, **{**args, **kwargs})


@register_model
def vmamba_tiny(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """VMamba-T [s1l8] (C 96, depths 2-2-8-2, ssm_ratio 1, d_state 1, MLP 4, no z)."""
    return _create_vmamba("vmamba_tiny", pretrained, **{**VMAMBA_CONFIGS["tiny"], **kwargs})


@register_model
def vmamba_small(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """VMamba-S [s1l20] (C 96, depths 2-2-20-2)."""
    return _create_vmamba("vmamba_small", pretrained, **{**VMAMBA_CONFIGS["small"], **kwargs})


@register_model
def vmamba_base(pretrained: bool = False, **kwargs: Any) -> VMamba:
    """VMamba-B [s1l20] (C 128, depths 2-2-20-2)."""
    return _create_vmamba("vmamba_base", pretrained, **{**VMAMBA_CONFIGS["base"], **kwargs})
