import os
import stat
from pathlib import Path

import pytest

from ssmkit.core.files import atomic_output, write_text_atomic


def test_write_text_atomic_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "results" / "table.md"
    assert write_text_atomic(target, "old\n") == target
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.md"]  # no temp file left


def test_write_text_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.md"
    write_text_atomic(target, "old\n")
    with pytest.raises(UnicodeEncodeError):
        target_text = "\udcff"  # a lone surrogate cannot be encoded
        write_text_atomic(target, target_text)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_atomic_output_names_a_fresh_sibling_with_the_target_suffixes(tmp_path: Path) -> None:
    target = tmp_path / "out" / "scan.nii.gz"
    with atomic_output(target) as first, atomic_output(target) as second:
        assert first.parent == target.parent and first.name.endswith(".nii.gz")
        assert first != second  # concurrent writers never share a temporary file
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    assert target.read_bytes() == b"first"  # the outer block finished last
    assert sorted(p.name for p in target.parent.iterdir()) == ["scan.nii.gz"]


def test_atomic_output_leaves_the_target_alone_when_the_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_atomic_output_says_so_when_nothing_was_written(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    with pytest.raises(FileNotFoundError, match="write to the path the context manager yields"):
        with atomic_output(target):
            pass
    assert not target.exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_output_files_get_the_umask_permissions_not_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "table.md", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
