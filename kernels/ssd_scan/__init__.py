"""ssmkit.kernels.ssd_scan."""
