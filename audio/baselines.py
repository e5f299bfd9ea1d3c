"""Conv-TasNet baseline from ``torchaudio.models`` (not re-implemented; Luo & Mesgarani 2019)."""

from __future__ import annotations

import torch
from torch import nn

from ssmkit.audio.blocks import as_waveform_batch
from ssmkit.core import register_model
from ssmkit.core.optional import require


class ConvTasNet(nn.Module):
    """torchaudio's Conv-TasNet with the ssmkit separator signature.

    Luo & Mesgarani, "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for Speech
    Separation", IEEE/ACM TASLP 27(8), 2019. The defaults are the paper's best configuration
    (N 512, L 16, B 128, H 512, P 3, X 8, R 3; ~5.1M parameters); the network is
    ``torchaudio.models.ConvTasNet`` (imported when the model is built).

    Shapes: ``(B, T)`` or ``(B, 1, T)`` -> ``(B, n_src, T)``.
    """

    def __init__(
        self,
        n_src: int = 2,
        enc_kernel_size: int = 16,
        enc_num_feats: int = 512,
        msk_kernel_size: int = 3,
        msk_num_feats: int = 128,
        msk_num_hidden_feats: int = 512,
        msk_num_layers: int = 8,
        msk_num_stacks: int = 3,
    ) -> None:
        super().__init__()
        models = require("torchaudio.models", "audio")
        self.n_src = n_src
        self.net = models.ConvTasNet(
            num_sources=n_src,
            enc_kernel_size=enc_kernel_size,
            enc_num_feats=enc_num_feats,
            msk_kernel_size=msk_kernel_size,
            msk_num_feats=msk_num_feats,
            msk_num_hidden_feats=msk_num_hidden_feats,
            msk_num_layers=msk_num_layers,
            msk_num_stacks=msk_num_stacks,
        )

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """Separate ``mixture (B, T)`` or ``(B, 1, T)`` into ``(B, n_src, T)``."""
        x = as_waveform_batch(mixture, type(self).__name__)
        return self.net(x[:, None])[..., : x.shape[-1]]


@register_model(
    "audio.conv_tasnet",
    tiny={"enc_num_feats": 16, "msk_num_feats": 8, "msk_num_hidden_feats": 16,
          "msk_num_layers": 2, "msk_num_stacks": 1},
    example_inputs=lambda m: (torch.randn(2, 203),),
)  # fmt: skip
def conv_tasnet(**kwargs: object) -> ConvTasNet:
    """Conv-TasNet baseline (torchaudio.models; N 512, X 8, R 3, ~5.1M params)."""
    return ConvTasNet(**kwargs)  # type: ignore[arg-type]
