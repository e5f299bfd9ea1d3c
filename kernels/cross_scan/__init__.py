"""ssmkit.kernels.cross_scan."""
