"""`ssmkit separate`: CLI round trip, chunked overlap-add, never overwriting the input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("soundfile")

import ssmkit
from ssmkit.__main__ import main as ssmkit_main
from ssmkit.audio.io import read_audio, write_audio
from ssmkit.audio.separate import (
    load_separator,
    output_paths,
    plan_outputs,
    save_separator,
    separate_waveform,
)

TINY = {"n_filters": 16, "d_model": 16, "n_layers": 1, "d_state": 4}


def _swapping_linear_model(x: torch.Tensor) -> torch.Tensor:
    """A linear 'separator' whose output order flips with the input length parity (like PIT)."""
    out = [0.3 * x, 0.7 * x]
    return torch.stack(out if x.shape[-1] % 2 else out[::-1], dim=1)


@pytest.mark.parametrize(("chunk", "overlap"), [(100, 20), (333, 101), (50, 49), (5000, 0)])
def test_chunked_overlap_add_matches_one_pass(chunk: int, overlap: int) -> None:
    wav = torch.randn(1001)
    full = torch.stack([0.3 * wav, 0.7 * wav])
    out = separate_waveform(_swapping_linear_model, wav, chunk, overlap)
    first = _swapping_linear_model(wav[None, :chunk])[0, :, :1] / wav[:1]
    expected = full if torch.isclose(first[0, 0], torch.tensor(0.3)) else full[[1, 0]]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_cli_round_trip(tmp_path: Path) -> None:
    model = ssmkit.create_model("audio.mamba_tasnet_xs", **TINY)
    ckpt = save_separator(tmp_path / "model.pt", model, "audio.mamba_tasnet_xs", TINY, 8000)
    mix_path = write_audio(tmp_path / "mix.wav", 0.1 * torch.randn(2500), 8000)
    before = mix_path.read_bytes()
    out_dir = tmp_path / "out"
    code = ssmkit_main(["separate", str(mix_path), "--checkpoint", str(ckpt), "--out-dir",
                        str(out_dir), "--chunk-seconds", "0.1", "--overlap-seconds", "0.02"])  # fmt: skip
    assert code == 0
    assert mix_path.read_bytes() == before
    outs = [read_audio(out_dir / f"mix_s{k}.wav", 8000, allow_silent=True)[0] for k in (1, 2)]
    assert all(o.shape == (2500,) for o in outs)
    # the written files are the model's chunked output (up to PCM16 and peak scaling)
    loaded, rate = load_separator(ckpt)
    with torch.no_grad():
        expected = separate_waveform(loaded, read_audio(mix_path, 8000)[0], 800, 160)
    got = torch.stack(outs)
    scale = (got * expected).sum() / expected.pow(2).sum()
    assert float((got - scale * expected).abs().max()) < 1e-3 * max(
        1.0, float(got.abs().max()) * 50
    )


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = ssmkit.create_model("audio.mamba_tasnet_xs", **TINY)
    ckpt = save_separator(tmp_path / "m.pt", model, "audio.mamba_tasnet_xs", TINY, 8000)
    wrong_rate = write_audio(tmp_path / "mix16k.wav", 0.1 * torch.randn(1600), 16000)
    assert ssmkit_main(["separate", str(wrong_rate), "--checkpoint", str(ckpt)]) == 2
    assert "16000 Hz but 8000 Hz" in capsys.readouterr().err
    assert ssmkit_main(["separate", str(wrong_rate), "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_outputs_never_replace_the_input(tmp_path: Path) -> None:
    inp = write_audio(tmp_path / "mix.wav", 0.1 * torch.randn(100), 8000)
    assert output_paths(inp, None, 2) == [tmp_path / "mix_s1.wav", tmp_path / "mix_s2.wav"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "mix_s2.wav").symlink_to(inp)  # writing there would clobber the input
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        output_paths(inp, out_dir, 2)


def test_outputs_never_replace_another_input_or_each_other(tmp_path: Path) -> None:
    a = write_audio(tmp_path / "a.wav", 0.1 * torch.randn(100), 8000)
    a_s1 = write_audio(tmp_path / "a_s1.wav", 0.1 * torch.randn(100), 8000)
    with pytest.raises(ValueError, match="refusing to overwrite the input.*a_s1.wav"):
        plan_outputs([a, a_s1], None, 2)  # a.wav's first output is the second input
    other = write_audio(tmp_path / "sub" / "a.wav", 0.1 * torch.randn(100), 8000)
    with pytest.raises(ValueError, match="would both write"):
        plan_outputs([a, other], tmp_path / "out", 2)
    assert plan_outputs([a, other], None, 2)[1] == [
        other.parent / "a_s1.wav",
        other.parent / "a_s2.wav",
    ]


def test_cli_progress_bar_and_argument_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = ssmkit.create_model("audio.mamba_tasnet_xs", **TINY)
    ckpt = save_separator(tmp_path / "m.pt", model, "audio.mamba_tasnet_xs", TINY, 8000)
    mix = write_audio(tmp_path / "long.wav", 0.1 * torch.randn(4000), 8000)
    args = ["separate", str(mix), "--checkpoint", str(ckpt), "--chunk-seconds", "0.1"]
    assert ssmkit_main([*args, "--overlap-seconds", "0.02"]) == 0
    err = capsys.readouterr().err
    assert "long.wav" in err and "chunk" in err  # tqdm bar: 4000 samples in 800-sample chunks
    assert ssmkit_main([*args, "--overlap-seconds", "0.1"]) == 2
    assert "--overlap-seconds (0.1) in [0, chunk-seconds)" in capsys.readouterr().err
    stereo = write_audio(tmp_path / "stereo.wav", 0.1 * torch.randn(2, 800), 8000)
    assert ssmkit_main(["separate", str(stereo), "--checkpoint", str(ckpt)]) == 2
    assert "2 channels but a mono file is expected" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    b = write_audio(fresh / "b.wav", 0.1 * torch.randn(800), 8000)
    b_s1 = write_audio(fresh / "b_s1.wav", 0.1 * torch.randn(800), 8000)
    kept = b_s1.read_bytes()
    assert ssmkit_main(["separate", str(b), str(b_s1), "--checkpoint", str(ckpt)]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert b_s1.read_bytes() == kept  # checked before anything was written
    assert sorted(p.name for p in fresh.iterdir()) == ["b.wav", "b_s1.wav"]


def test_dpmamba_checkpoints_from_before_the_wiring_fix_load_as_trained(tmp_path: Path) -> None:
    """A format-1 payload (no "separator_format") holds DPMamba weights of the old wiring
    (per-frame input norm, skip around intra); it must separate exactly as that model did."""
    tiny = {"n_filters": 16, "n_layers": 1, "chunk_size": 8, "d_state": 4}
    legacy_wiring = {"input_norm": "cln", "skip_around_intra": True}
    torch.manual_seed(0)
    legacy = ssmkit.create_model("audio.dpmamba_xs", **tiny, **legacy_wiring).eval()
    current = ssmkit.create_model("audio.dpmamba_xs", **tiny).eval()
    current.load_state_dict(legacy.state_dict())  # same keys and shapes: loads without complaint
    x = torch.randn(1, 203)
    with torch.no_grad():
        assert not torch.allclose(current(x), legacy(x), atol=1e-3)  # ... but separates otherwise
        old = tmp_path / "old.pt"
        payload = {"model": "audio.dpmamba_xs", "model_kwargs": tiny,
                   "state_dict": legacy.state_dict(), "sample_rate": 8000}  # fmt: skip
        torch.save(payload, old)
        torch.testing.assert_close(load_separator(old)[0](x), legacy(x))
        new = save_separator(tmp_path / "new.pt", current, "audio.dpmamba_xs", tiny)
        assert torch.load(new, weights_only=False)["separator_format"] == 3
        torch.testing.assert_close(load_separator(new)[0](x), current(x))


def test_mamba_tasnet_checkpoints_with_projection_biases_load_as_trained(tmp_path: Path) -> None:
    """Formats 1-2 hold Mamba-TasNet weights with biases on its 1x1 convs (the authors' and
    today's have none); they must load, not fail on unexpected keys, and separate as before."""
    tiny = {"n_filters": 16, "d_model": 16, "n_layers": 1, "d_state": 4}
    torch.manual_seed(0)
    legacy = ssmkit.create_model("audio.mamba_tasnet_xs", **tiny, projection_bias=True).eval()
    with torch.no_grad():
        legacy.bottleneck.bias.normal_()
        legacy.mask_proj.bias.normal_()
    assert {"bottleneck.bias", "mask_proj.bias"} <= set(legacy.state_dict())
    x = torch.randn(1, 203)
    for fmt in (None, 2):
        payload = {"model": "audio.mamba_tasnet_xs", "model_kwargs": tiny,
                   "state_dict": legacy.state_dict(), "sample_rate": 8000}  # fmt: skip
        if fmt is not None:
            payload["separator_format"] = fmt
        torch.save(payload, tmp_path / f"old{fmt}.pt")
        with torch.no_grad():
            torch.testing.assert_close(load_separator(tmp_path / f"old{fmt}.pt")[0](x), legacy(x))
    current = ssmkit.create_model("audio.mamba_tasnet_xs", **tiny)
    new = save_separator(tmp_path / "new.pt", current, "audio.mamba_tasnet_xs", tiny)
    assert "bottleneck.bias" not in torch.load(new, weights_only=False)["state_dict"]
    assert load_separator(new)[0].bottleneck.bias is None
