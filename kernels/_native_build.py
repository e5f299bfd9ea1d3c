"""Compile a C kernel held as a source string into a cached shared library, loaded via ctypes.

Shared by the native CPU kernels (``selective_scan/native.py``, ``selective_scan/fused.py``,
``depthwise_conv/native.py``, ``rms_norm/native.py``): ``load_or_warn`` builds and loads one (or
warns once and returns None, so the op falls back to torch), ``_parts`` / ``_run_parts`` split a
call over Python threads when the library was built without OpenMP. Only plain C and a C compiler are needed (no torch headers); the
build takes about a second. Libraries are cached in ``~/.cache/ssmkit`` (``SSMKIT_CACHE_DIR`` or
``XDG_CACHE_HOME`` override it), keyed by a hash of source, compiler, machine and flags, and
written atomically (temp file + ``os.replace``) so concurrent builders never see half a file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = ["_FLAG_SETS", "_build", "_cache_dir", "_parts", "_ptr", "_run_parts", "load_or_warn"]

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


def load_or_warn(
    op: str, source: str, names: tuple[str, ...], stem: str, openmp_probe: str, fallback: str
) -> ctypes.CDLL | None:
    """Build and load a kernel library, or return None with one warning naming ``fallback``.

    ``SSMKIT_NATIVE=0`` disables every native kernel (returns None silently). ``openmp_probe`` is
    the library's ``int64_t f(void)`` saying whether it was built with OpenMP.
    """
    if os.environ.get("SSMKIT_NATIVE", "1") == "0":
        return None
    try:
        library = _build(source, names, stem, _FLAG_SETS)
        getattr(library, openmp_probe).restype = ctypes.c_int64
        return library
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(
            f"{op}: could not build the native CPU kernel ({error}); using {fallback}. Install a "
            "C compiler (gcc/clang) to get it.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


# Calling a kernel over a range of rows split into one part per thread (when the library was
# built without OpenMP: ctypes releases the GIL, so Python threads run the parts in parallel).


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    # keyed by pid: a forked child (DataLoader worker) inherits the pool but not its threads
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssmkit-native")


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def _parts(pairs: int) -> list[tuple[int, int]]:
    workers = max(1, min(torch.get_num_threads(), pairs))
    bounds = [pairs * i // workers for i in range(workers + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _run_parts(function: ctypes._CFuncPtr, parts: list[tuple[int, int]], make_args) -> None:
    if len(parts) == 1:
        function(*make_args(0, *parts[0]))
        return
    # the first part runs on the calling thread (no hand-off, one thread fewer on the cores)
    futures = [
        _pool(len(parts) - 1, os.getpid()).submit(function, *make_args(i, lo, hi))
        for i, (lo, hi) in enumerate(parts)
        if i > 0
    ]
    function(*make_args(0, *parts[0]))
    for future in futures:
        future.result()
