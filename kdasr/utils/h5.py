"""lhotse's HDF5 array writer, in memory: the file's bytes are written by Python afterwards.

HDF5 that meets a full disk half-way through a file raises from ``close``,
keeps the file open in the library, and the process then segfaults at exit
(seen with ``kdasr soft-labels`` on a full disk). Built in memory, the file
never meets the disk; Python's own write then fails with a plain ENOSPC that
:func:`kdasr.utils.io.atomic_path` names, and nothing is left half-written.
"""
from __future__ import annotations

from pathlib import Path

import h5py
from lhotse import NumpyHdf5Writer


class MemoryHdf5Writer(NumpyHdf5Writer):
    """``NumpyHdf5Writer`` (same storage type, so lhotse reads the result) over an in-memory file."""

    def __init__(self, name: str = "memory.h5") -> None:  # no super().__init__(): it would open a real file
        self.storage_path_ = Path(name)
        self.hdf = h5py.File(name, mode="w", driver="core", backing_store=False)

    def image(self) -> bytes:
        """The bytes of the HDF5 file as written so far."""
        self.hdf.flush()
        return self.hdf.id.get_file_image()
