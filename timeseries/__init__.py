"""ssmkit.timeseries: S-Mamba and SpaceTime forecasting on any CSV."""

if __name__ != "ssmkit.timeseries":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.timeseries`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.timeseries` instead."
    )
