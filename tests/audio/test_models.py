"""Separator shapes: any length in, same length out; (B, T) and (B, 1, T); bad input errors."""

from __future__ import annotations

import pytest
import torch

import ssmkit
from ssmkit.audio.dpmamba import DualPathBlock, chunk, overlap_add
from ssmkit.core.registry import model_entry

NAMES = ["audio.mamba_tasnet_xs", "audio.dpmamba_xs", "audio.spmamba", "audio.conv_tasnet"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [1, 9, 257])
def test_length_is_preserved(name: str, length: int) -> None:
    model = ssmkit.create_model(name, **model_entry(name).tiny).eval()
    with torch.no_grad():
        out = model(torch.randn(2, length))
        out3 = model(torch.randn(2, 1, length))
    assert out.shape == (2, 2, length)
    assert out3.shape == (2, 2, length)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_batch_items_are_independent(name: str) -> None:
    model = ssmkit.create_model(name, **model_entry(name).tiny).eval()
    x = torch.randn(3, 150)
    with torch.no_grad():
        together = model(x)
        alone = model(x[1:2])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_shapes_raise(name: str) -> None:
    model = ssmkit.create_model(name, **model_entry(name).tiny)
    with pytest.raises(ValueError, match=r"\(B, T\) or \(B, 1, T\)"):
        model(torch.randn(2, 2, 100))  # stereo
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.randn(100))  # no batch axis
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(1, 100, dtype=torch.long))


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("audio.mamba_tasnet_xs", 2.2),
        ("audio.dpmamba_xs", 2.3),
        ("audio.spmamba", 6.14),
    ],
)
def test_published_parameter_counts(name: str, millions: float) -> None:
    model = ssmkit.create_model(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - millions) / millions < 0.03, f"{name}: {count:.2f}M vs {millions}M"


def test_mamba_tasnet_one_by_one_convs_have_no_bias_as_the_authors() -> None:
    model = ssmkit.create_model("audio.mamba_tasnet_xs")
    assert model.bottleneck.bias is None and model.mask_proj.bias is None
    with_bias = ssmkit.create_model("audio.mamba_tasnet_xs", projection_bias=True)
    extra = sum(p.numel() for p in with_bias.parameters()) - sum(
        p.numel() for p in model.parameters()
    )
    assert extra == 128 + 2 * 128  # d_model + n_src * N


@pytest.mark.parametrize("length", [1, 7, 8, 37, 64])
def test_dual_path_chunking_round_trip(length: int) -> None:
    x = torch.randn(2, length, 3)  # channels-last frames (B, L, N)
    chunks, gap = chunk(x, 8)
    assert chunks.shape[0] == 2 and chunks.shape[2:] == (8, 3)
    # consecutive chunks overlap by half a chunk
    torch.testing.assert_close(chunks[:, 1:, :4], chunks[:, :-1, 4:])
    # every frame is covered by exactly two 50 %-overlapping chunks
    torch.testing.assert_close(overlap_add(chunks, gap), 2 * x)


def test_all_sizes_registered() -> None:
    names = set(ssmkit.list_models(domain="audio"))
    for family in ("mamba_tasnet", "dpmamba"):
        assert {f"audio.{family}_{s}" for s in ("xs", "s", "m", "l")} <= names
    assert "audio.spmamba" in names


@pytest.mark.parametrize("skip_around_intra", [False, True])
def test_dual_path_block_is_speechbrains_dual_computation_block(skip_around_intra: bool) -> None:
    """intra = gLN(intra(x)) [+ x]; out = intra + gLN(inter(intra)), paths over K then over S."""
    torch.manual_seed(0)
    block = DualPathBlock(8, skip_around_intra=skip_around_intra, d_state=4)
    with torch.no_grad():
        for p in block.parameters():  # non-trivial affines, so a swapped norm shows
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 3, 6, 8)  # (B, S, K, N)
    b, s, k, n = x.shape

    def gln(h: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:  # GroupNorm(1) per item
        mean = h.mean(dim=(1, 2, 3), keepdim=True)
        var = h.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + 1e-8) * norm.weight + norm.bias

    with torch.no_grad():
        intra = gln(block.intra(x.reshape(b * s, k, n)).view(b, s, k, n), block.intra_norm)
        if skip_around_intra:
            intra = intra + x
        across = intra.transpose(1, 2).reshape(b * k, s, n)
        inter = block.inter(across).view(b, k, s, n).transpose(1, 2)
        want = intra + gln(inter, block.inter_norm)
        torch.testing.assert_close(block(x), want)


def test_dpmamba_normalises_its_input_over_the_whole_utterance() -> None:
    """DPMamba's input norm is SpeechBrain's GroupNorm(1, N): louder frames stay louder, unlike
    Mamba-TasNet's per-frame channel LayerNorm, which removes each frame's level."""
    dp = ssmkit.create_model("audio.dpmamba_xs", n_filters=16, n_layers=1, chunk_size=8)
    mt = ssmkit.create_model("audio.mamba_tasnet_xs", n_filters=16, d_model=16, n_layers=1)
    w = torch.randn(1, 10, 16)
    w[:, 5:] *= 10.0  # the second half is 10x louder
    with torch.no_grad():
        dp_rms, mt_rms = (m.norm(w).pow(2).mean(-1).sqrt()[0] for m in (dp, mt))
    assert dp_rms[5:].min() > 3 * dp_rms[:5].max()
    torch.testing.assert_close(mt_rms[5:], mt_rms[:5].mean().expand(5), rtol=0.3, atol=0.0)
    with pytest.raises(ValueError, match="input_norm must be one of"):
        ssmkit.create_model("audio.dpmamba_xs", n_filters=16, n_layers=1, input_norm="bn")
