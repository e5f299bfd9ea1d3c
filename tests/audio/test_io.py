"""soundfile I/O: round trip, atomic writes, and the errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssmkit.audio.io import read_audio, write_audio

sf = pytest.importorskip("soundfile")


def test_round_trip_pcm16(tmp_path: Path) -> None:
    wav = 0.5 * torch.sin(torch.arange(8000) / 8000 * 2 * torch.pi * 440)
    path = write_audio(tmp_path / "a.wav", wav, 8000)
    back, rate = read_audio(path, 8000)
    assert rate == 8000 and back.shape == wav.shape
    assert (back - wav).abs().max() < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temp file left behind


def test_loud_output_is_scaled_not_clipped(tmp_path: Path) -> None:
    wav = torch.tensor([0.0, 2.0, -4.0, 1.0])
    back, _ = read_audio(write_audio(tmp_path / "b.wav", wav, 8000), 8000)
    assert back.abs().max() < 1.0
    torch.testing.assert_close(back / back[2], wav / wav[2], atol=1e-3, rtol=0)


def test_sample_rate_mismatch(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "c.wav", torch.randn(1600) * 0.1, 16000)
    with pytest.raises(ValueError, match="16000 Hz but 8000 Hz"):
        read_audio(path, 8000)


def test_stereo_where_mono_expected(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    sf.write(path, (torch.randn(800, 2) * 0.1).numpy(), 8000)
    with pytest.raises(ValueError, match="2 channels but a mono file"):
        read_audio(path, 8000)
    wav, _ = read_audio(path, 8000, mono=False)
    assert wav.shape == (2, 800)


def test_silent_and_short_and_missing(tmp_path: Path) -> None:
    silent = write_audio(tmp_path / "silent.wav", torch.zeros(800), 8000)
    with pytest.raises(ValueError, match="silent"):
        read_audio(silent, 8000)
    assert read_audio(silent, 8000, allow_silent=True)[0].abs().max() == 0
    short = write_audio(tmp_path / "short.wav", torch.randn(80) * 0.1, 8000)
    with pytest.raises(ValueError, match="shorter than the required"):
        read_audio(short, 8000, min_seconds=0.5)
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "nope.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="could not decode"):
        read_audio(tmp_path / "junk.wav")
