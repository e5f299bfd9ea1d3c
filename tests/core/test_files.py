from pathlib import Path

import pytest

from ssmkit.core.files import write_text_atomic


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
