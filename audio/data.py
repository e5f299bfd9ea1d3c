"""Separation data: LibriMix-style metadata CSVs and on-the-fly (dynamic) mixing.

- :class:`MetadataMixtures` reads a LibriMix / WHAM!-style CSV with columns ``mixture_path``,
  ``source_1_path``, ``source_2_path``, ... (paths relative to the CSV's folder or absolute).
- :class:`DynamicMixtures` sums random utterances of ``n_src`` different speakers (one subfolder
  per speaker) with random gains in dB into new mixtures every epoch (Zeghidour & Grangier 2021;
  Mamba-TasNet trains this way).
- :class:`MixtureDataModule` wraps both for Lightning (imported lazily by ``ssmkit.audio``).

Items are ``(mixture (T,), sources (n_src, T))`` float32. Files go through
:func:`ssmkit.audio.io.read_audio`, which refuses wrong sample rates, multi-channel files and silent
files; dynamic mixing can resample instead (``resample=True``), and then says so once.
"""

from __future__ import annotations

import csv
import random
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ssmkit.audio.io import read_audio, resample
from ssmkit.core.optional import require

AUDIO_SUFFIXES = (".wav", ".flac")


def _crop(signals: torch.Tensor, length: int | None, rng: random.Random) -> torch.Tensor:
    """Random window of ``length`` samples of ``(..., T)`` (zero-padded at the end if shorter)."""
    if length is None:
        return signals
    total = signals.shape[-1]
    if total >= length:
        start = rng.randint(0, total - length)
        return signals[..., start : start + length]
    return torch.nn.functional.pad(signals, (0, length - total))


class MetadataMixtures(Dataset):
    """Pre-mixed utterances listed in a LibriMix-style metadata CSV.

    Args:
        csv_path: CSV with ``mixture_path`` and ``source_1_path`` ... ``source_{n_src}_path``.
        sample_rate: every file must have this rate (Libri2Mix ``wav8k`` -> 8000).
        n_src: number of sources.
        segment: seconds per item (random crop, for training); ``None`` = whole utterances
            (batch size 1 or equal lengths).
        min_seconds: rows whose mixture is shorter are dropped (with a warning saying how many);
            defaults to ``segment``.
        seed: crop randomness.
    """

    def __init__(
        self,
        csv_path: str | Path,
        sample_rate: int = 8000,
        n_src: int = 2,
        segment: float | None = None,
        min_seconds: float | None = None,
        seed: int = 0,
    ) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"MetadataMixtures: csv_path {str(csv_path)!r} does not exist.")
        self.sample_rate, self.n_src = sample_rate, n_src
        self.segment = None if segment is None else int(round(segment * sample_rate))
        self.rng = random.Random(seed)
        with open(self.csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        needed = ["mixture_path"] + [f"source_{k + 1}_path" for k in range(n_src)]
        missing = [c for c in needed if rows and c not in rows[0]]
        if not rows or missing:
            raise ValueError(
                f"MetadataMixtures: {str(csv_path)!r} needs columns {needed} (LibriMix layout); "
                f"missing {missing or needed} (found {list(rows[0]) if rows else 'no rows'})."
            )
        min_seconds = (self.segment or 0) / sample_rate if min_seconds is None else min_seconds
        if "length" in rows[0] and min_seconds > 0:
            kept = [r for r in rows if int(r["length"]) >= min_seconds * sample_rate]
            if len(kept) < len(rows):
                warnings.warn(
                    f"MetadataMixtures: dropped {len(rows) - len(kept)} of {len(rows)} mixtures "
                    f"shorter than {min_seconds:.2f} s.",
                    stacklevel=2,
                )
            rows = kept
        self.rows = rows
        self.columns = needed
        self.min_seconds = min_seconds

    def __len__(self) -> int:
        return len(self.rows)

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.csv_path.parent / path

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[index]
        # a mixture shorter than the segment raises here (no silent zero-padding); a CSV with a
        # ``length`` column drops such rows up front instead
        wavs = [
            read_audio(self._path(row[c]), self.sample_rate, min_seconds=self.min_seconds)[0]
            for c in self.columns
        ]
        lengths = {w.shape[-1] for w in wavs}
        if len(lengths) != 1:
            raise ValueError(
                f"MetadataMixtures: row {index} ({row['mixture_path']}) has files of different "
                f"lengths {sorted(lengths)}; mixture and sources must be sample-aligned."
            )
        stacked = _crop(torch.stack(wavs), self.segment, self.rng)
        return stacked[0], stacked[1:]


class DynamicMixtures(Dataset):
    """New two-(or more-)speaker mixtures on the fly from single-speaker utterances.

    Args:
        root: folder with one subfolder per speaker holding .wav/.flac utterances.
        sample_rate: output rate.
        n_src: speakers per mixture (all different).
        segment: seconds per item; longer utterances are randomly cropped, shorter ones zero-padded.
        gain_db: each source is scaled by a uniform random gain in this range (dB).
        epoch_size: items per epoch.
        resample: files at another rate are resampled (a warning names the rates once); if False
            they raise.
        deterministic: item ``i`` is always the same mixture (for validation).
        seed: randomness.
    """

    def __init__(
        self,
        root: str | Path,
        sample_rate: int = 8000,
        n_src: int = 2,
        segment: float = 2.0,
        gain_db: tuple[float, float] = (-2.5, 2.5),
        epoch_size: int = 1000,
        resample: bool = False,
        deterministic: bool = False,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"DynamicMixtures: root {str(root)!r} is not a folder.")
        self.speakers = {
            d.name: sorted(p for p in d.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            for d in sorted(self.root.iterdir())
            if d.is_dir()
        }
        self.speakers = {k: v for k, v in self.speakers.items() if v}
        if len(self.speakers) < n_src:
            raise ValueError(
                f"DynamicMixtures: {str(root)!r} has {len(self.speakers)} speaker subfolders with "
                f"audio, but n_src={n_src} different speakers are needed per mixture. Expected "
                "the layout root/<speaker>/<utterance>.wav."
            )
        if segment <= 0:
            raise ValueError(f"DynamicMixtures: segment must be > 0 seconds, got {segment}.")
        if gain_db[0] > gain_db[1]:
            raise ValueError(f"DynamicMixtures: gain_db must be (low, high), got {gain_db}.")
        self.sample_rate, self.n_src = sample_rate, n_src
        self.segment = int(round(segment * sample_rate))
        self.gain_db, self.epoch_size = gain_db, epoch_size
        self.resample, self.deterministic, self.seed = resample, deterministic, seed
        self.rng = random.Random(seed)
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return self.epoch_size

    def _load(self, path: Path) -> torch.Tensor:
        wav, rate = read_audio(path, None if self.resample else self.sample_rate)
        if rate != self.sample_rate:
            if rate not in self._warned:
                self._warned.add(rate)
                warnings.warn(
                    f"DynamicMixtures: resampling files at {rate} Hz to {self.sample_rate} Hz "
                    f"(first: {path}).",
                    stacklevel=2,
                )
            wav = resample(wav, rate, self.sample_rate)
        return wav

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + index) if self.deterministic else self.rng
        names = rng.sample(sorted(self.speakers), self.n_src)
        sources = []
        for name in names:
            wav = _crop(self._load(rng.choice(self.speakers[name])), self.segment, rng)
            gain = 10 ** (rng.uniform(*self.gain_db) / 20)
            sources.append(wav / wav.pow(2).mean().sqrt().clamp_min(1e-8) * 0.05 * gain)
        stacked = torch.stack(sources)
        mixture = stacked.sum(0)
        peak = float(mixture.abs().max().clamp_min(stacked.abs().max()))
        if peak > 0.9:
            stacked, mixture = stacked * (0.9 / peak), mixture * (0.9 / peak)
        return mixture, stacked


def _build(source: str | Path | None, kind: str, **kwargs: object) -> Dataset | None:
    if source is None:
        return None
    path = Path(source)
    if path.suffix.lower() == ".csv":
        keys = ("sample_rate", "n_src", "segment", "seed")
        return MetadataMixtures(path, **{k: v for k, v in kwargs.items() if k in keys})
    if path.is_dir():
        return DynamicMixtures(path, **kwargs)
    raise ValueError(
        f"MixtureDataModule: {kind} must be a metadata .csv or a speaker-per-subfolder folder; "
        f"got {str(source)!r}, which is neither."
    )


def _lightning_base() -> type:
    return require("lightning", "train").pytorch.LightningDataModule


class MixtureDataModule(_lightning_base()):  # type: ignore[misc]
    """Lightning data for speech separation: a metadata CSV or a speaker folder per split.

    Each of ``train``, ``val``, ``test`` is a LibriMix-style ``.csv`` (pre-mixed) or a folder with
    one subfolder per speaker (dynamic mixing; validation/test then use fixed mixtures).

    Args:
        train, val, test: data sources (``val``/``test`` optional).
        sample_rate: Hz. n_src: speakers per mixture.
        segment: training segment in seconds (validation/test CSVs use whole utterances).
        gain_db: dynamic-mixing gain range in dB. epoch_size: dynamic mixtures per epoch.
        resample: resample mismatched files in dynamic mixing (with a warning) instead of raising.
        batch_size, num_workers, seed: loader settings.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        sample_rate: int = 8000,
        n_src: int = 2,
        segment: float = 2.0,
        gain_db: tuple[float, float] = (-2.5, 2.5),
        epoch_size: int = 1000,
        val_size: int = 100,
        resample: bool = False,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        common = {"sample_rate": hp.sample_rate, "n_src": hp.n_src, "resample": hp.resample}
        self.train_set = _build(
            hp.train, "train", segment=hp.segment, gain_db=tuple(hp.gain_db),
            epoch_size=hp.epoch_size, seed=hp.seed, **common,
        )  # fmt: skip
        fixed = {"segment": hp.segment, "epoch_size": hp.val_size, "deterministic": True}
        self.val_set = _build(hp.val, "val", seed=hp.seed + 1, **fixed, **common)
        self.test_set = _build(hp.test, "test", seed=hp.seed + 2, **fixed, **common)
        if isinstance(self.val_set, MetadataMixtures):
            self.val_set.segment = None
        if isinstance(self.test_set, MetadataMixtures):
            self.test_set.segment = None

    def _loader(self, data: Dataset | None, name: str, train: bool) -> DataLoader:
        if data is None:
            raise ValueError(f"MixtureDataModule: no {name} data; pass {name}=<csv or folder>.")
        whole = isinstance(data, MetadataMixtures) and data.segment is None
        return DataLoader(
            data,
            batch_size=1 if whole else self.hparams.batch_size,
            shuffle=train,
            num_workers=self.hparams.num_workers,
            drop_last=train,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", False)
