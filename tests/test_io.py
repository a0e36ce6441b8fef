from pathlib import Path

import pytest

from kdasr.utils.io import atomic_path, atomic_write_text, file_sha256


def test_atomic_path_renames_on_success_and_keeps_suffix(tmp_path: Path):
    target = tmp_path / "sub" / "cuts.jsonl.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".jsonl.gz") and tmp.parent == target.parent
        tmp.write_bytes(b"x")
        assert not target.exists()
    assert target.read_bytes() == b"x"
    assert [p.name for p in target.parent.iterdir()] == ["cuts.jsonl.gz"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_file_sha256_depends_on_content(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("2")
    assert file_sha256(a, b) != file_sha256(b, a)
    assert file_sha256(a) == file_sha256(a)


def test_atomic_files_get_normal_permissions(tmp_path: Path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask
