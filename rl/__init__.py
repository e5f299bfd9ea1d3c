"""ssmkit.rl: SSM world models for gymnasium agents."""

if __name__ != "ssmkit.rl":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.rl`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.rl` instead."
    )
