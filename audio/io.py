"""WAV input/output with soundfile, with errors that say what is wrong and how to fix it.

torchaudio 2.11's ``load``/``save`` need torchcodec, so ssmkit reads and writes audio with
soundfile (``pip install "ssmkit[audio]"``). Nothing here resamples, downmixes or trims silently:
a wrong sample rate, a stereo file where mono is expected, a silent or too-short file raise
``ValueError`` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ssmkit.core.files import atomic_output
from ssmkit.core.optional import require

SILENCE_RMS = 1e-6


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    min_seconds: float = 0.0,
    allow_silent: bool = False,
) -> tuple[torch.Tensor, int]:
    """Read a WAV/FLAC file as float32.

    Args:
        path: audio file.
        sample_rate: expected rate in Hz; a different file rate raises (resample the file first,
            or use :func:`resample` explicitly). ``None`` accepts any rate.
        mono: expect one channel and return ``(T,)``; a multi-channel file raises instead of being
            averaged. With ``mono=False`` returns ``(C, T)``.
        min_seconds: shorter files raise.
        allow_silent: if False, an all-zero (RMS < 1e-6) file raises.

    Returns:
        ``(waveform, sample_rate)``; waveform ``(T,)`` if ``mono`` else ``(C, T)``.
    """
    sf = require("soundfile", "audio")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {str(path)!r} does not exist.")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as error:  # soundfile.LibsndfileError derives from RuntimeError
        raise ValueError(f"could not decode {str(path)!r} as audio: {error}") from error
    wav = torch.from_numpy(data.T.copy())  # (C, T)
    if sample_rate is not None and rate != sample_rate:
        raise ValueError(
            f"{str(path)!r} has sample rate {rate} Hz but {sample_rate} Hz is expected. Resample "
            f"the file (e.g. `sox in.wav -r {sample_rate} out.wav`) or pass the matching "
            "sample_rate; ssmkit does not resample silently."
        )
    if mono and wav.shape[0] != 1:
        raise ValueError(
            f"{str(path)!r} has {wav.shape[0]} channels but a mono file is expected (a "
            "mixture is one channel; sources are separate files). Downmix it explicitly, e.g. "
            "`sox in.wav -c 1 out.wav`, or pass mono=False."
        )
    seconds = wav.shape[-1] / rate
    if seconds < min_seconds or wav.shape[-1] == 0:
        raise ValueError(
            f"{str(path)!r} is {seconds:.3f} s long, shorter than the required "
            f"{min_seconds:.3f} s; drop it from the list or lower the segment length."
        )
    if not allow_silent and float(wav.pow(2).mean().sqrt()) < SILENCE_RMS:
        raise ValueError(
            f"{str(path)!r} is silent (RMS < {SILENCE_RMS:g}); SI-SNR is undefined for a silent "
            "reference. Remove the file (or pass allow_silent=True)."
        )
    return (wav[0] if mono else wav), rate


def write_audio(path: str | os.PathLike, waveform: torch.Tensor, sample_rate: int) -> Path:
    """Write ``(T,)`` or ``(C, T)`` float audio as 16-bit PCM WAV, atomically (temp + rename).

    Values outside [-1, 1] are scaled down together (peak-normalised) rather than clipped.
    """
    sf = require("soundfile", "audio")
    path = Path(path)
    if waveform.dim() not in (1, 2):
        raise ValueError(
            f"write_audio: waveform must be (T,) or (C, T); got {tuple(waveform.shape)}."
        )
    wav = waveform.detach().float().cpu()
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    if peak > 1.0:
        wav = wav / peak * 0.99
    data = wav.numpy() if wav.dim() == 1 else wav.T.numpy()
    with atomic_output(path) as tmp:
        sf.write(tmp, data, sample_rate, subtype="PCM_16", format="WAV")
    return path


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling along the last axis (torchaudio's sinc interpolation)."""
    if orig_rate == new_rate:
        return waveform
    torchaudio = require("torchaudio", "audio")
    return torchaudio.functional.resample(waveform, orig_rate, new_rate)
