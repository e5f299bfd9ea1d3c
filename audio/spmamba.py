"""SPMamba: TF-GridNet with bidirectional Mamba in place of its BLSTMs (Li, Chen, Hu, 2024)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.audio.blocks import as_waveform_batch
from ssmkit.core import BiMamba, RMSNorm, register_model


class BiMambaPath(nn.Module):
    """One TF-GridNet path (frequency or time) with a bidirectional Mamba sequence model.

    ``LayerNorm(C) -> unfold (emb_ks, emb_hs) to C * emb_ks features -> x + BiMamba(RMSNorm(x))
    with two separate Mamba blocks (forward, and on the flipped sequence) concatenated to
    2 * C * emb_ks -> ConvTranspose1d(2 * C * emb_ks -> C, emb_ks, emb_hs) -> + input``.

    Shapes: ``(N, C, L) -> (N, C, L)`` for ``N`` independent sequences of length ``L``.
    """

    def __init__(
        self, channels: int, emb_ks: int, emb_hs: int, d_state: int = 16, expand: float = 4
    ) -> None:
        super().__init__()
        self.emb_ks, self.emb_hs = emb_ks, emb_hs
        width = channels * emb_ks
        self.norm_in = nn.LayerNorm(channels, eps=1e-5)
        self.norm = RMSNorm(width)
        self.mamba = BiMamba(width, variant="separate", merge="concat", d_state=d_state,
                             expand=expand)  # fmt: skip
        self.proj = nn.ConvTranspose1d(2 * width, channels, emb_ks, stride=emb_hs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, length = x.shape
        pad = self.emb_ks - self.emb_hs
        frames = max(0, -(-(length - self.emb_ks + pad) // self.emb_hs)) + 1
        total = (frames - 1) * self.emb_hs + self.emb_ks
        h = self.norm_in(x.transpose(1, 2)).transpose(1, 2)
        h = F.pad(h, (0, total - length))
        h = h.unfold(-1, self.emb_ks, self.emb_hs)  # (N, C, frames, emb_ks)
        h = h.permute(0, 2, 1, 3).reshape(n, frames, c * self.emb_ks)
        h = h.repeat(1, 1, 2) + self.mamba(self.norm(h))  # residual around each direction
        h = self.proj(h.transpose(1, 2))[..., :length]  # (N, C, L)
        return x + h


class FullBandAttention(nn.Module):
    """TF-GridNet's full-band self-attention across time frames (all frequencies per frame).

    Per head: 1x1 convs to queries/keys of ``e`` channels and values of ``C / heads`` channels
    (PReLU + LayerNorm over channel and frequency), attention over ``T`` with the features of all
    ``Q`` frequencies flattened, a 1x1 output projection (PReLU + LayerNorm) and a residual.

    Shapes: ``(B, C, T, Q) -> (B, C, T, Q)``.
    """

    def __init__(self, channels: int, n_freqs: int, n_heads: int = 4, qk_dim: int = 512) -> None:
        super().__init__()
        if channels % n_heads:
            raise ValueError(
                f"FullBandAttention: channels ({channels}) must be divisible by n_heads ({n_heads})."
            )
        self.n_heads = n_heads
        e = max(1, math.ceil(qk_dim / n_freqs))
        v = channels // n_heads

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, out, 1), nn.PReLU(), _TFNorm(out, n_freqs))

        self.q = branch(e * n_heads)
        self.k = branch(e * n_heads)
        self.v = branch(v * n_heads)
        self.proj = branch(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, q = x.shape
        h = self.n_heads

        def heads(y: torch.Tensor) -> torch.Tensor:  # (B, h*d, T, Q) -> (B, h, T, d*Q)
            return y.view(b, h, -1, t, q).permute(0, 1, 3, 2, 4).reshape(b, h, t, -1)

        out = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        out = out.view(b, h, t, c // h, q).permute(0, 1, 3, 2, 4).reshape(b, c, t, q)
        return x + self.proj(out)


class _TFNorm(nn.Module):
    """LayerNorm over (channel, frequency) of ``(B, C, T, Q)`` with per-(C, Q) affine."""

    def __init__(self, channels: int, n_freqs: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, n_freqs))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, n_freqs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 3), keepdim=True)
        var = x.var(dim=(1, 3), keepdim=True, unbiased=False)
        return (x - mean) / (var + self.eps).sqrt() * self.gamma + self.beta


class SPMambaBlock(nn.Module):
    """Frequency path, time path, full-band attention. ``(B, C, T, Q) -> (B, C, T, Q)``."""

    def __init__(
        self, channels: int, n_freqs: int, emb_ks: int, emb_hs: int, n_heads: int,
        d_state: int, expand: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.freq = BiMambaPath(channels, emb_ks, emb_hs, d_state, expand)
        self.time = BiMambaPath(channels, emb_ks, emb_hs, d_state, expand)
        self.attn = FullBandAttention(channels, n_freqs, n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, q = x.shape
        x = self.freq(x.permute(0, 2, 1, 3).reshape(b * t, c, q)).view(b, t, c, q)
        x = x.permute(0, 3, 2, 1).reshape(b * q, c, t)
        x = self.time(x).view(b, q, c, t).permute(0, 2, 3, 1)  # (B, C, T, Q)
        return self.attn(x)


class SPMamba(nn.Module):
    """SPMamba: STFT -> TF-GridNet blocks with bidirectional Mamba -> iSTFT.

    Li, Chen, Hu, "SPMamba: State-space model is all you need in speech separation",
    arXiv 2404.02063 (2024). TF-GridNet: Wang et al., IEEE/ACM TASLP 2023.

    The mixture is divided by its standard deviation, transformed with a Hann-window STFT, real
    and imaginary parts stacked as 2 channels -> Conv2d 3x3 -> GroupNorm(1, emb_dim) ->
    ``n_layers`` x (frequency path, time path, full-band attention) -> ConvTranspose2d 3x3 to
    ``2 * n_src`` channels -> complex spectra -> iSTFT (same length) -> times the std.

    Args:
        n_src: speakers. n_fft, hop_length: STFT (512 / 128 at 16 kHz, 256 / 64 at 8 kHz).
        emb_dim: channels ``C``. emb_ks, emb_hs: unfold kernel and hop of the paths.
        n_layers: blocks (6). n_heads: attention heads (4). d_state, expand: Mamba (16, 4).

    Shapes: ``(B, T)`` or ``(B, 1, T)`` -> ``(B, n_src, T)``.
    """

    def __init__(
        self,
        n_src: int = 2,
        n_fft: int = 512,
        hop_length: int = 128,
        emb_dim: int = 16,
        emb_ks: int = 8,
        emb_hs: int = 1,
        n_layers: int = 6,
        n_heads: int = 4,
        d_state: int = 16,
        expand: float = 4,
    ) -> None:
        super().__init__()
        self.n_src, self.n_fft, self.hop_length = n_src, n_fft, hop_length
        n_freqs = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.conv_in = nn.Sequential(nn.Conv2d(2, emb_dim, 3, padding=1), nn.GroupNorm(1, emb_dim))
        self.blocks = nn.ModuleList(
            SPMambaBlock(emb_dim, n_freqs, emb_ks, emb_hs, n_heads, d_state, expand)
            for _ in range(n_layers)
        )
        self.conv_out = nn.ConvTranspose2d(emb_dim, 2 * n_src, 3, padding=1)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """Separate ``mixture (B, T)`` or ``(B, 1, T)`` into ``(B, n_src, T)``."""
        x = as_waveform_batch(mixture, type(self).__name__)
        batch, length = x.shape
        std = x.std(dim=-1, keepdim=True).clamp_min(1e-8) if length > 1 else x.new_ones(batch, 1)
        x = x / std
        pad = max(0, self.n_fft // 2 + 1 - length)  # reflect padding needs T > n_fft / 2
        spec = torch.stft(
            F.pad(x, (0, pad)), self.n_fft, self.hop_length, window=self.window.to(x.dtype),
            return_complex=True,
        )  # fmt: skip
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, T', Q)
        h = self.conv_in(h)
        for block in self.blocks:
            h = block(h)
        h = self.conv_out(h).view(batch * self.n_src, 2, *h.shape[-2:]).transpose(2, 3)
        est = torch.complex(h[:, 0].float(), h[:, 1].float())
        wav = torch.istft(
            est, self.n_fft, self.hop_length, window=self.window.float(), length=length + pad
        )[..., :length]
        return wav.view(batch, self.n_src, length).to(x.dtype) * std[:, :, None]


@register_model(
    "audio.spmamba",
    tiny={"n_fft": 32, "hop_length": 8, "emb_dim": 4, "emb_ks": 2, "n_layers": 1, "d_state": 4},
    example_inputs=lambda m: (torch.randn(2, 203),),
)
def spmamba(**kwargs: object) -> SPMamba:
    """SPMamba (16 kHz: n_fft 512, hop 128, emb_dim 16, 6 blocks, ~6.1M params)."""
    return SPMamba(**kwargs)  # type: ignore[arg-type]
