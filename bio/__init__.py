"""ssmkit.bio: Mamba medical segmentation on MONAI."""

if __name__ != "ssmkit.bio":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.bio`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.bio` instead."
    )
