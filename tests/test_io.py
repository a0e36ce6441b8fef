import errno
from pathlib import Path

import pytest

from kdasr.utils.io import NoSpaceError, atomic_path, atomic_write_text, file_sha256


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


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("HDF5: file write failed: errno = 28, error message = 'No space'")])
def test_a_full_disk_is_named_with_the_path(tmp_path: Path, error: Exception):
    target = tmp_path / "out.bin"
    with pytest.raises(NoSpaceError) as err:
        with atomic_path(target):
            raise error
    assert str(err.value) == f"cannot write {target}: No space left on device (nothing of it was kept)"
    assert err.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="Permission"):  # other errors pass through as they are
        with atomic_path(target):
            raise PermissionError("Permission denied")
