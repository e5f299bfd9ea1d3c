"""ssmkit.kernels.diag_scan."""
