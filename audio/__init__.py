"""ssmkit.audio: speech separation with SSMs (Mamba-TasNet, DPMamba, SPMamba)."""

if __name__ != "ssmkit.audio":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.audio`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.audio` instead."
    )
