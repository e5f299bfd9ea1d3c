"""``ssmkit separate mix.wav --checkpoint ckpt [--out-dir DIR]``: separate files with a trained model.

Long files are processed in chunks with overlap-add: consecutive chunks are cross-faded with a
Hann ramp over the overlap, and each chunk's speakers are re-ordered to match the previous chunk
on the overlap (the network's output order is arbitrary under PIT). Outputs are
``<stem>_s1.wav``, ``<stem>_s2.wav``, ... beside the input or in ``--out-dir``; an output never
replaces the input file.

Checkpoints: a Lightning ``.ckpt`` of :class:`ssmkit.audio.task.SeparationTask`, or a file from
:func:`save_separator` (``{"model", "model_kwargs", "state_dict", "sample_rate"}``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssmkit.audio.io import read_audio, write_audio
from ssmkit.core import create_model
from ssmkit.core.files import atomic_output
from ssmkit.core.optional import require

# Each change of a default wiring: (first checkpoint format with the new default, registry-name
# prefix, constructor arguments that rebuild the old wiring).
WIRING_CHANGES: tuple[tuple[int, str, dict[str, Any]], ...] = (
    # DPMamba as in the authors' configurations: global input LayerNorm, no skip around intra
    (2, "audio.dpmamba", {"input_norm": "cln", "skip_around_intra": True}),
    # Mamba-TasNet's bottleneck and mask 1x1 convs without bias, as the authors'
    (3, "audio.mamba_tasnet", {"projection_bias": True}),
)
CHECKPOINT_FORMAT = max(fmt for fmt, _, _ in WIRING_CHANGES)
"""Wiring version written into checkpoints (``"separator_format"``); 1, or no field: written
before the first entry of ``WIRING_CHANGES``."""


def model_kwargs_for(name: str, kwargs: dict[str, Any], fmt: int) -> dict[str, Any]:
    """Constructor arguments that rebuild a checkpoint's model with the wiring it was trained with.

    For every entry of ``WIRING_CHANGES`` newer than the checkpoint's format that names this
    model, the old wiring's arguments are put back unless the checkpoint names them itself:
    under today's defaults such weights would load without error and separate badly (DPMamba,
    format 1) or fail on unexpected keys (Mamba-TasNet's biases, formats 1-2).
    """
    old_wiring: dict[str, Any] = {}
    for changed_in, prefix, arguments in WIRING_CHANGES:
        if fmt < changed_in and name.startswith(prefix):
            old_wiring |= arguments
    return old_wiring | dict(kwargs)


def save_separator(
    path: str | os.PathLike,
    model: nn.Module,
    name: str,
    model_kwargs: dict[str, Any] | None = None,
    sample_rate: int = 8000,
) -> Path:
    """Write a self-describing checkpoint atomically (:func:`ssmkit.core.files.atomic_output`)."""
    payload = {
        "model": name,
        "model_kwargs": dict(model_kwargs or {}),
        "state_dict": model.state_dict(),
        "sample_rate": sample_rate,
        "separator_format": CHECKPOINT_FORMAT,
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_separator(
    path: str | os.PathLike, model: str | None = None, sample_rate: int | None = None
) -> tuple[nn.Module, int]:
    """Load a separator from either checkpoint format; returns ``(model in eval mode, rate)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {str(path)!r} does not exist.")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"{str(path)!r} is not a separation checkpoint (expected a Lightning .ckpt of "
            "SeparationTask or a file written by ssmkit.audio.separate.save_separator)."
        )
    if "hyper_parameters" in ckpt:  # Lightning
        hp = ckpt["hyper_parameters"]
        name = model or hp.get("model")
        kwargs = hp.get("model_kwargs") or {}
        state = {
            k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
        }
        rate = sample_rate or ckpt.get("sample_rate") or hp.get("sample_rate")
    else:
        name, kwargs = model or ckpt.get("model"), ckpt.get("model_kwargs") or {}
        state, rate = ckpt["state_dict"], sample_rate or ckpt.get("sample_rate")
    if not isinstance(name, str):
        raise ValueError(
            f"{str(path)!r} does not name its model; pass --model, e.g. --model audio.mamba_tasnet_xs."
        )
    if rate is None:
        raise ValueError(f"{str(path)!r} does not store its sample rate; pass --sample-rate.")
    net = create_model(name, **model_kwargs_for(name, kwargs, ckpt.get("separator_format", 1)))
    net.load_state_dict(state)
    return net.eval(), int(rate)


def _best_order(prev: torch.Tensor, cur: torch.Tensor) -> list[int]:
    """Permutation of ``cur (S, L)`` best correlated with ``prev (S, L)`` on the overlap."""
    n = cur.shape[0]
    if n == 1 or prev.shape[-1] == 0:
        return list(range(n))
    corr = prev @ cur.T  # (S, S)
    perms = list(itertools.permutations(range(n)))
    scores = [sum(float(corr[i, p[i]]) for i in range(n)) for p in perms]
    return list(perms[max(range(len(perms)), key=scores.__getitem__)])


@torch.no_grad()
def separate_waveform(
    model: Callable[[torch.Tensor], torch.Tensor],
    wav: torch.Tensor,
    chunk: int | None = None,
    overlap: int = 0,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> torch.Tensor:
    """Separate ``wav (T,)`` into ``(n_src, T)``, in chunks of ``chunk`` samples if given.

    Args:
        model: ``(1, T) -> (1, n_src, T)``.
        wav: mono waveform.
        chunk: samples per chunk (``None`` or ``>= T``: one pass).
        overlap: samples shared by consecutive chunks (cross-faded), ``< chunk``.
        progress: wraps the chunk iterator (e.g. ``tqdm``).
    """
    length = wav.shape[-1]
    if chunk is None or chunk >= length:
        return model(wav[None])[0]
    if not 0 <= overlap < chunk:
        raise ValueError(f"separate_waveform: overlap ({overlap}) must be in [0, chunk={chunk}).")
    hop = chunk - overlap
    starts = list(range(0, max(length - overlap, 1), hop))
    out: torch.Tensor | None = None
    fade_in = (
        torch.hann_window(2 * overlap + 2, periodic=False)[1 : overlap + 1] if overlap else None
    )
    for start in progress(starts) if progress else starts:
        piece = model(wav[None, start : start + chunk])[0]  # (S, l)
        if out is None:
            out = wav.new_zeros(piece.shape[0], length)
            out[:, : piece.shape[-1]] = piece
            continue
        shared = min(overlap, piece.shape[-1])
        order = _best_order(out[:, start : start + shared], piece[:, :shared])
        piece = piece[order]
        if shared:
            ramp = fade_in[:shared] if shared == overlap else torch.linspace(0, 1, shared + 2)[1:-1]
            region = slice(start, start + shared)
            out[:, region] = out[:, region] * (1 - ramp) + piece[:, :shared] * ramp
        out[:, start + shared : start + piece.shape[-1]] = piece[:, shared:]
    assert out is not None
    return out


def output_paths(inp: Path, out_dir: Path | None, n_src: int) -> list[Path]:
    """``<out_dir or inp.parent>/<stem>_s{k}.wav``; raises if any equals the input file."""
    folder = inp.parent if out_dir is None else out_dir
    paths = [folder / f"{inp.stem}_s{k + 1}.wav" for k in range(n_src)]
    for p in paths:
        if p.resolve() == inp.resolve():
            raise ValueError(
                f"refusing to overwrite the input {str(inp)!r} with a separated source; "
                "rename the input or choose another --out-dir."
            )
    return paths


def plan_outputs(inputs: list[Path], out_dir: Path | None, n_src: int) -> list[list[Path]]:
    """Output paths of every input, checked before anything is written.

    Raises ``ValueError`` if an output would replace any of the inputs (also another input of
    the same call, e.g. ``a.wav`` and ``a_s1.wav``) or if two inputs would write the same file
    (same stem, same ``--out-dir``).
    """
    plans = [output_paths(inp, out_dir, n_src) for inp in inputs]
    sources = {inp.resolve(): inp for inp in inputs}
    seen: dict[Path, Path] = {}
    for inp, paths in zip(inputs, plans, strict=True):
        for p in paths:
            key = p.resolve()
            if key in sources:
                raise ValueError(
                    f"refusing to overwrite the input {str(sources[key])!r} with a separated "
                    f"source of {str(inp)!r}; rename one of them or choose another --out-dir."
                )
            if key in seen:
                raise ValueError(
                    f"{str(inp)!r} and {str(seen[key])!r} would both write {str(p)!r}; separate "
                    "them into different --out-dir folders."
                )
            seen[key] = inp
    return plans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ssmkit separate", description="Separate speakers in mixture files."
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="mono mixture .wav file(s)")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--model", help="registry name if the checkpoint does not store it")
    parser.add_argument("--sample-rate", type=int, help="override the checkpoint's sample rate")
    parser.add_argument("--out-dir", type=Path, help="default: beside each input")
    parser.add_argument("--chunk-seconds", type=float, default=10.0, help="0 = whole file")
    parser.add_argument("--overlap-seconds", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        model, rate = load_separator(args.checkpoint, args.model, args.sample_rate)
        model.to(args.device)
        if args.chunk_seconds < 0 or not 0 <= args.overlap_seconds < (args.chunk_seconds or 1e9):
            raise ValueError(
                f"--chunk-seconds ({args.chunk_seconds}) must be >= 0 (0 = whole file) and "
                f"--overlap-seconds ({args.overlap_seconds}) in [0, chunk-seconds)."
            )
        n_src = int(getattr(model, "n_src", 2))
        plans = plan_outputs(args.inputs, args.out_dir, n_src)
        tqdm = None if args.no_progress else require("tqdm", "audio").tqdm
        for inp, paths in zip(args.inputs, plans, strict=True):
            wav, _ = read_audio(inp, rate)
            chunk = int(args.chunk_seconds * rate) or None
            overlap = int(args.overlap_seconds * rate) if chunk else 0
            progress = None if tqdm is None else partial(tqdm, desc=inp.name, unit="chunk")
            est = separate_waveform(
                lambda x: model(x.to(args.device)).float().cpu(), wav, chunk, overlap, progress
            )
            for path, src in zip(paths, est, strict=True):
                write_audio(path, src, rate)
                print(path)
    except (ValueError, FileNotFoundError) as error:
        print(f"ssmkit separate: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
