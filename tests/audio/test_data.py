"""Mixture data: dynamic mixing from a tiny speaker folder, LibriMix CSVs, the data module."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("lightning")

from ssmkit.audio.data import DynamicMixtures, MetadataMixtures, MixtureDataModule
from ssmkit.audio.io import write_audio


def _voice(f0: float, seconds: float, rate: int) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return sum(0.1 / k * torch.sin(2 * torch.pi * k * f0 * t) for k in range(1, 4))


@pytest.fixture
def speaker_dir(tmp_path: Path) -> Path:
    root = tmp_path / "speakers"
    for s, f0 in enumerate([110.0, 180.0, 240.0]):
        for u in range(2):
            write_audio(
                root / f"spk{s}" / f"u{u}.wav", _voice(f0 + 7 * u, 0.3 + 0.2 * u, 8000), 8000
            )
    return root


def test_dynamic_mixing_sums_different_speakers(speaker_dir: Path) -> None:
    data = DynamicMixtures(speaker_dir, 8000, n_src=2, segment=0.4, gain_db=(-5, 5), epoch_size=7)
    assert len(data) == 7
    for i in range(7):
        mixture, sources = data[i]
        assert mixture.shape == (3200,) and sources.shape == (2, 3200)
        torch.testing.assert_close(mixture, sources.sum(0))
        assert not torch.allclose(sources[0], sources[1])
        assert mixture.abs().max() <= 0.9 + 1e-6


def test_validation_mixtures_are_fixed(speaker_dir: Path) -> None:
    a = DynamicMixtures(speaker_dir, segment=0.25, epoch_size=3, deterministic=True, seed=4)
    b = DynamicMixtures(speaker_dir, segment=0.25, epoch_size=3, deterministic=True, seed=4)
    torch.testing.assert_close(a[2][1], b[2][1])


def test_gain_range_in_db(speaker_dir: Path) -> None:
    data = DynamicMixtures(speaker_dir, segment=0.25, gain_db=(6.0, 6.0), epoch_size=1)
    _, sources = data[0]
    rms = sources.pow(2).mean(-1).sqrt()
    # both sources normalised to the same level, then +6 dB: equal RMS (up to the peak guard)
    torch.testing.assert_close(rms[0], rms[1], rtol=1e-4, atol=0)


def test_resampling_is_announced_or_refused(speaker_dir: Path) -> None:
    write_audio(speaker_dir / "spk0" / "hi.wav", _voice(150, 0.5, 16000), 16000)
    strict = DynamicMixtures(speaker_dir, 8000, segment=0.25, epoch_size=40)
    with pytest.raises(ValueError, match="16000 Hz but 8000 Hz"):
        for i in range(40):
            strict[i]
    lenient = DynamicMixtures(speaker_dir, 8000, segment=0.25, epoch_size=40, resample=True)
    with pytest.warns(UserWarning, match="resampling files at 16000 Hz to 8000 Hz"):
        for i in range(40):
            assert lenient[i][0].shape == (2000,)


def test_bad_folders(tmp_path: Path, speaker_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DynamicMixtures(tmp_path / "missing")
    only_one = tmp_path / "one"
    write_audio(only_one / "spk" / "a.wav", _voice(100, 0.3, 8000), 8000)
    with pytest.raises(ValueError, match="speaker subfolders"):
        DynamicMixtures(only_one)
    write_audio(speaker_dir / "spk1" / "quiet.wav", torch.zeros(4000), 8000)
    data = DynamicMixtures(speaker_dir, segment=0.25, epoch_size=60)
    with pytest.raises(ValueError, match="silent"):
        for i in range(60):
            data[i]


def _csv_set(root: Path, n: int = 3) -> Path:
    rows = []
    for i in range(n):
        s1, s2 = _voice(100 + 10 * i, 0.3, 8000), _voice(200 + 10 * i, 0.3, 8000)
        for key, sig in (("mix", s1 + s2), ("s1", s1), ("s2", s2)):
            write_audio(root / key / f"{i}.wav", sig, 8000)
        rows.append({"mixture_ID": i, "mixture_path": f"mix/{i}.wav", "source_1_path": f"s1/{i}.wav",
                     "source_2_path": f"s2/{i}.wav", "length": 2400})  # fmt: skip
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "metadata.csv"


def test_metadata_csv(tmp_path: Path) -> None:
    path = _csv_set(tmp_path)
    data = MetadataMixtures(path, 8000)
    mixture, sources = data[1]
    assert mixture.shape == (2400,) and sources.shape == (2, 2400)
    assert (mixture - sources.sum(0)).abs().max() < 2e-4  # PCM16 rounding
    with pytest.warns(UserWarning, match="dropped 3 of 3"):
        assert len(MetadataMixtures(path, 8000, segment=1.0)) == 0
    with pytest.raises(ValueError, match="16000 Hz"):
        MetadataMixtures(path, 16000)[0]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="source_1_path"):
        MetadataMixtures(tmp_path / "bad.csv")


def test_metadata_csv_without_length_column_refuses_short_and_stereo(tmp_path: Path) -> None:
    path = _csv_set(tmp_path)
    rows = list(csv.DictReader(open(path, newline="")))
    no_length = tmp_path / "no_length.csv"
    with open(no_length, "w", newline="") as handle:
        fields = [k for k in rows[0] if k != "length"]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert MetadataMixtures(no_length, 8000, segment=0.25)[0][0].shape == (2000,)
    # 2400-sample files are shorter than a 1 s segment: an error, not silent zero-padding
    with pytest.raises(ValueError, match=r"shorter than the required 1\.000 s"):
        MetadataMixtures(no_length, 8000, segment=1.0)[0]
    write_audio(tmp_path / "mix" / "0.wav", torch.randn(2, 2400) * 0.1, 8000)  # stereo mixture
    with pytest.raises(ValueError, match="2 channels but a mono file is expected"):
        MetadataMixtures(no_length, 8000)[0]


def test_data_module_loaders(tmp_path: Path, speaker_dir: Path) -> None:
    dm = MixtureDataModule(
        train=str(speaker_dir), val=str(_csv_set(tmp_path / "val")), segment=0.25,
        epoch_size=6, batch_size=3,
    )  # fmt: skip
    dm.setup("fit")
    mixture, sources = next(iter(dm.train_dataloader()))
    assert mixture.shape == (3, 2000) and sources.shape == (3, 2, 2000)
    mixture, sources = next(iter(dm.val_dataloader()))
    assert mixture.shape == (1, 2400)  # whole utterances
    with pytest.raises(ValueError, match="no test data"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match="neither"):
        MixtureDataModule(train=str(tmp_path / "x.txt")).setup("fit")
