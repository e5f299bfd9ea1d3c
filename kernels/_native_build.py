"""Compile a C kernel held as a source string into a cached shared library, loaded via ctypes.

Shared by the native CPU kernels (``selective_scan/native.py``, ``selective_scan/fused.py``,
``depthwise_conv/native.py``). Only plain C and a C compiler are needed (no torch headers); the
build takes about a second. Libraries are cached in ``~/.cache/ssmkit`` (``SSMKIT_CACHE_DIR`` or
``XDG_CACHE_HOME`` override it), keyed by a hash of source, compiler, machine and flags, and
written atomically (temp file + ``os.replace``) so concurrent builders never see half a file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["_FLAG_SETS", "_build", "_cache_dir"]

# -fopenmp first: the kernels then run on the process's OpenMP pool (torch's libgomp, the threads
# that just ran the surrounding ops); without it, callers split work over Python threads.
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"],
    ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno"],
    ["-O3", "-fopenmp-simd", "-fno-math-errno"],
)


def _cache_dir() -> Path:
    """The folder holding the compiled libraries (created if missing; a temp folder fallback)."""
    base = os.environ.get("SSMKIT_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    path = Path(base) / "ssmkit" if base else Path.home() / ".cache" / "ssmkit"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        fallback = Path(tempfile.gettempdir()) / "ssmkit"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _build(
    source: str,
    names: tuple[str, ...],
    stem: str,
    flag_sets: tuple[list[str], ...] = _FLAG_SETS,
) -> ctypes.CDLL:
    """Compile ``source`` to a shared library (cached by a hash of source, compiler and flags).

    Args:
        source: the C source.
        names: exported functions, given ``restype = None`` (callers override where needed).
        stem: file name stem of the library in the cache folder.
        flag_sets: compiler flag lists, tried in order; the first that builds wins.

    Raises:
        RuntimeError: no compiler, or no flag set builds (the compiler errors are joined).
    """
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    folder = _cache_dir()
    errors = []
    for flags in flag_sets:
        key = hashlib.sha256(
            "\0".join([source, compiler, platform.machine(), *flags]).encode()
        ).hexdigest()[:16]
        target = folder / f"{stem}_{key}.so"
        if not target.exists():
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                source_file = Path(tmp) / f"{stem}.c"
                source_file.write_text(source)
                built = Path(tmp) / f"{stem}.so"
                cmd = [
                    compiler,
                    *flags,
                    "-shared",
                    "-fPIC",
                    "-o",
                    str(built),
                    str(source_file),
                    "-lm",
                ]
                try:
                    result = subprocess.run(cmd, capture_output=True, text=True)
                except OSError as error:
                    errors.append(f"{' '.join(cmd)}: {error}")
                    continue
                if result.returncode != 0:
                    errors.append(f"{' '.join(cmd)}: {result.stderr.strip()[:500]}")
                    continue
                os.replace(built, target)  # atomic: concurrent builders never see half a file
        library = ctypes.CDLL(str(target))
        for name in names:
            getattr(library, name).restype = None
        return library
    raise RuntimeError("; ".join(errors))
