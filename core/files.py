"""Writing files without ever leaving a half-written one behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path`` to write; on success it replaces ``path``.

    Readers see either the old file or the complete new one, never a partial write. If the body
    raises, the temporary file is removed and ``path`` is left as it was. The parent folder is
    created if needed.

    The temporary name is unique per call (process id and a random token), so concurrent writers
    never share one, and it ends in ``path``'s own suffixes (``.wav``, ``.nii.gz``, ``.png``), so
    writers that pick a format from the extension pick the right one. The writer creates the file
    itself, so it gets the usual permissions (the umask's), not ``mkstemp``'s owner-only 0600.

    Example::

        with atomic_output("runs/model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name.split(".", 1)[0] or path.name
    suffix = path.name[len(stem) :]
    tmp = path.with_name(f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic_output: nothing was written to the temporary file {str(tmp)!r} for "
                f"{str(path)!r}; write to the path the context manager yields."
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`).

    Returns:
        The written path.
    """
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure_atomic(fig: object, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (see :func:`atomic_output`) and close it, also when
    saving fails. The format follows ``path``'s suffix (``.png``)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi)  # type: ignore[attr-defined]
    finally:
        plt.close(fig)  # type: ignore[arg-type]
    return Path(path)
