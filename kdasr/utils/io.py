"""Atomic file output and small helpers shared by every stage.

Every file a stage produces is written under a temporary name in the same
directory and renamed into place, so a killed job never leaves a half-written
manifest, archive or checkpoint that a later stage would trust.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from kdasr.errors import KdasrError

Pathlike = Union[str, os.PathLike]

# A full disk, a quota, a file-size limit: the user must make room, and wants to hear which path.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class NoSpaceError(KdasrError, OSError):
    """An output could not be written for lack of space; the message names the path."""

_UMASK = os.umask(0)
os.umask(_UMASK)


class NotUtf8Error(KdasrError, ValueError):
    """A text file (transcripts, lexicon, Kaldi table) that is not UTF-8; the message names the line."""


def read_utf8(path: Pathlike) -> str:
    """The text of ``path``, or a NotUtf8Error naming the line and column of the first bad byte
    (Python's own error gives only a byte offset into the file)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line = data.count(b"\n", 0, e.start) + 1
        raise NotUtf8Error(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column "
            f"{e.start - line_start + 1} of the line); re-encode it, e.g. iconv -f latin1 -t utf-8"
        ) from None


def no_space_errno(e: BaseException) -> Optional[int]:
    """The errno of ``e`` when it says the disk (or quota, or file-size limit) is full, else None.

    HDF5 (h5py) reports a failed write as a RuntimeError whose text holds ``errno = 28``.
    """
    code = e.errno if isinstance(e, OSError) else None
    if code is None:
        m = re.search(r"errno = (\d+)", str(e))
        code = int(m.group(1)) if m else None
    return code if code in NO_SPACE else None


@contextlib.contextmanager
def atomic_path(path: Pathlike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffixes of ``path`` (``x.jsonl.gz`` becomes
    ``.x.tmp1234.jsonl.gz``) so libraries that pick a format from the
    extension (lhotse, torch) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.tmp", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared like any file
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as e:
        code = no_space_errno(e)
        if code is None or isinstance(e, NoSpaceError):
            raise
        err = NoSpaceError(f"cannot write {path}: {os.strerror(code)} (nothing of it was kept)")
        err.errno = code
        raise err from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def replace_dir(tmp: Path, final: Path) -> None:
    """Put a finished temporary directory in place of ``final``: the old one is moved aside, then deleted.

    Between the two renames ``final`` is briefly absent, never half-written.
    """
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_write_text(path: Pathlike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_manifest(manifest, path: Pathlike) -> None:
    """Write a lhotse manifest (CutSet, RecordingSet, ...) atomically."""
    with atomic_path(path) as tmp:
        manifest.to_file(tmp)


def file_sha256(*paths: Pathlike) -> str:
    """SHA-256 over the contents of ``paths`` in order (e.g. tokens.txt + bpe.model)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()
