"""ssmkit.kernels.selective_scan."""
