"""Atomic file output and small helpers shared by every stage.

Every file a stage produces is written under a temporary name in the same
directory and renamed into place, so a killed job never leaves a half-written
manifest, archive or checkpoint that a later stage would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

Pathlike = Union[str, os.PathLike]

_UMASK = os.umask(0)
os.umask(_UMASK)


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
