"""ssmkit.vision: Vim and VMamba as timm backbones, image classification fine-tuning."""

if __name__ != "ssmkit.vision":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.vision`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.vision` instead."
    )
