"""Recipe: a synthetic-speech separation corpus made locally with espeak-ng (no downloads).

Speakers are espeak-ng accents x voice variants x pitch x rate; sentences are random word strings
from a built-in vocabulary. Layout (speaker per subfolder, the input of dynamic mixing):

    OUT/train/<speaker>/<utt>.wav      OUT/test/<speaker>/<utt>.wav   (speaker-disjoint)
    OUT/test_mix/{mix,s1,s2}/<id>.wav  + OUT/test_mix/metadata.csv     (fixed held-out mixtures)

espeak-ng writes 22.05 kHz; the recipe resamples to ``--sample-rate`` (default 8 kHz) with
torchaudio and says so. The Debian package ``espeak-ng`` is installed with apt-get if it is
missing (only when this script runs, never on import).

    python -m ssmkit.audio.espeak_corpus OUT [--speakers 24] [--utterances 40] [--sample-rate 8000]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ssmkit.audio.io import read_audio, resample, write_audio

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
           "en-us-nyc", "en-gb-x-gbcwmd")  # fmt: skip
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
WORDS = (
    "the a one two three seven house river green small bright quiet morning evening table water "
    "window garden market winter summer yellow purple silver golden paper letter story number "
    "people music station doctor teacher mountain forest island ocean city village bridge road "
    "train plane coffee bread apple orange music light dark happy slowly quickly never always "
    "often today tomorrow yesterday because after before under over between around through "
    "walks runs sings reads writes opens closes finds brings takes makes keeps holds turns "
    "moves stops starts builds breaks carries watches listens speaks answers remembers forgets "
    "computer signal system pattern language measure question reason problem answer picture "
    "family friend stranger neighbour captain farmer painter sailor singer driver pilot"
).split()


def ensure_espeak() -> str:
    """Path of ``espeak-ng``; installs the Debian package with apt-get when it is missing."""
    exe = shutil.which("espeak-ng")
    if exe:
        return exe
    if shutil.which("apt-get") is None:
        raise RuntimeError(
            "espeak-ng is not installed and apt-get is unavailable; install espeak-ng with your "
            "system's package manager (e.g. `brew install espeak-ng`)."
        )
    print("espeak-ng not found: installing the Debian package with apt-get ...", flush=True)
    sudo = [] if _is_root() else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "espeak-ng"], check=True)
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("apt-get finished but espeak-ng is still not on PATH.")
    return exe


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def speakers(count: int, seed: int = 0) -> list[dict]:
    """``count`` distinct synthetic speakers (accent, variant, pitch 0-99, rate in words/min)."""
    rng = random.Random(seed)
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    rng.shuffle(combos)
    if count > len(combos):
        raise ValueError(f"speakers: at most {len(combos)} distinct speakers, asked for {count}.")
    return [
        {
            "name": f"{a}_{v}_{i:02d}",
            "voice": f"{a}+{v}",
            "pitch": rng.randint(20, 80),
            "rate": rng.randint(140, 200),
        }
        for i, (a, v) in enumerate(combos[:count])
    ]


def synthesize(exe: str, speaker: dict, text: str, sample_rate: int, tmp: Path) -> torch.Tensor:
    """One utterance as ``(T,)`` float at ``sample_rate``."""
    wav_path = tmp / "utt.wav"
    subprocess.run(
        [exe, "-v", speaker["voice"], "-p", str(speaker["pitch"]), "-s", str(speaker["rate"]),
         "-w", str(wav_path), text],
        check=True, capture_output=True,
    )  # fmt: skip
    wav, rate = read_audio(wav_path)
    return resample(wav, rate, sample_rate)


def make_corpus(
    out: Path,
    n_speakers: int = 24,
    n_test_speakers: int = 6,
    utterances: int = 40,
    test_mixtures: int = 100,
    sample_rate: int = 8000,
    seed: int = 0,
) -> Path:
    """Write the corpus to ``out`` (see the module docstring) and return ``out``."""
    exe = ensure_espeak()
    rng = random.Random(seed)
    voices = speakers(n_speakers, seed)
    test_names = {v["name"] for v in voices[:n_test_speakers]}
    print(f"synthesising {n_speakers} speakers x {utterances} utterances with espeak-ng; "
          f"resampling 22050 Hz -> {sample_rate} Hz", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for voice in voices:
            split = "test" if voice["name"] in test_names else "train"
            folder = out / split / voice["name"]
            n = utterances if split == "train" else max(10, utterances // 4)
            for i in range(n):
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12)))
                wav = synthesize(exe, voice, text, sample_rate, Path(tmp))
                write_audio(folder / f"{i:04d}.wav", wav, sample_rate)
    _held_out_mixtures(out, test_mixtures, sample_rate, rng)
    return out


def _held_out_mixtures(out: Path, count: int, sample_rate: int, rng: random.Random) -> None:
    """Fixed two-speaker test mixtures (gains within +-2.5 dB, min length) + LibriMix CSV."""
    by_speaker = {d.name: sorted(d.glob("*.wav")) for d in sorted((out / "test").iterdir())}
    names = sorted(by_speaker)
    root = out / "test_mix"
    rows = []
    for i in range(count):
        a, b = rng.sample(names, 2)
        s1, _ = read_audio(rng.choice(by_speaker[a]), sample_rate)
        s2, _ = read_audio(rng.choice(by_speaker[b]), sample_rate)
        length = min(s1.shape[-1], s2.shape[-1])
        gain = rng.uniform(-2.5, 2.5)
        s1 = s1[:length] * 10 ** (gain / 20)
        s2 = s2[:length] * 10 ** (-gain / 20)
        mix = s1 + s2
        peak = float(mix.abs().max().clamp_min(s1.abs().max()).clamp_min(s2.abs().max()))
        scale = 0.9 / peak if peak > 0.9 else 1.0
        uid = f"{i:04d}_{a}_{b}"
        paths = {}
        for key, sig in (("mix", mix), ("s1", s1), ("s2", s2)):
            paths[key] = write_audio(root / key / f"{uid}.wav", sig * scale, sample_rate)
        rows.append(
            {
                "mixture_ID": uid,
                "mixture_path": str(paths["mix"].relative_to(root)),
                "source_1_path": str(paths["s1"].relative_to(root)),
                "source_2_path": str(paths["s2"].relative_to(root)),
                "length": length,
            }
        )
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--speakers", type=int, default=24)
    parser.add_argument("--test-speakers", type=int, default=6)
    parser.add_argument("--utterances", type=int, default=40, help="per training speaker")
    parser.add_argument("--test-mixtures", type=int, default=100)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} exists and is not empty; choose a new folder.", file=sys.stderr)
        return 2
    make_corpus(
        args.out, args.speakers, args.test_speakers, args.utterances, args.test_mixtures,
        args.sample_rate, args.seed,
    )  # fmt: skip
    print(f"corpus written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
