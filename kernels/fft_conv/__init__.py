"""ssmkit.kernels.fft_conv."""
