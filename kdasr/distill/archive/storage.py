"""A lhotse storage backend for small integer arrays: raw bytes appended to one file per chunk.

Why not ``NumpyHdf5Writer`` for the compact archive form: HDF5 spends about
390 bytes of headers and index on every array. A demo cut has ~57 output
frames, so two arrays per cut cost ~14 bytes per frame on top of a 17-byte
compact top-8 payload, and even one packed array ~7 (measured on the demo
archive). Like lhotse's own ``LilcomChunkyWriter`` (which compresses floats
lossily and so cannot hold token ids), this writes each array's bytes at an
offset in one file; the storage key holds the offset, dtype and shape, so a
cut's ``kd_logp.load()`` works through lhotse's reader registry like any
other backend. Registered when this module is imported, which importing
any part of :mod:`kdasr.distill.archive` does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from lhotse.features.io import FeaturesReader, FeaturesWriter, register_reader, register_writer

from kdasr.utils.io import Pathlike

STORAGE_TYPE = "kdasr_raw_chunky"


def _key(offset: int, value: np.ndarray) -> str:
    return f"{offset}:{value.dtype.str}:{','.join(map(str, value.shape))}"


@register_writer
class RawChunkyWriter(FeaturesWriter):
    """Append arrays (any fixed-size dtype, C order) to ``storage_path``; keys are ``offset:dtype:shape``."""

    name = STORAGE_TYPE

    def __init__(self, storage_path: Pathlike, mode: str = "wb", *args, **kwargs) -> None:
        super().__init__()
        self.storage_path_ = Path(storage_path)
        self.file = open(self.storage_path_, mode)

    @property
    def storage_path(self) -> str:
        return str(self.storage_path_)

    def write(self, key: str, value: np.ndarray) -> str:
        value = np.ascontiguousarray(value)
        offset = self.file.tell()
        self.file.write(value.tobytes())
        return _key(offset, value)

    def close(self) -> None:
        self.file.close()


@register_reader
class RawChunkyReader(FeaturesReader):
    """Read what :class:`RawChunkyWriter` wrote; ``left/right_offset_frames`` slice the first axis."""

    name = STORAGE_TYPE

    def __init__(self, storage_path: Pathlike, *args, **kwargs) -> None:
        super().__init__()
        self.storage_path = storage_path

    def read(self, key: str, left_offset_frames: int = 0, right_offset_frames: Optional[int] = None) -> np.ndarray:
        offset, dtype, shape = key.split(":")
        dims = tuple(int(d) for d in shape.split(",") if d)
        dt = np.dtype(dtype)
        count = int(np.prod(dims)) if dims else 1
        with open(self.storage_path, "rb") as f:
            f.seek(int(offset))
            data = f.read(count * dt.itemsize)
        if len(data) != count * dt.itemsize:
            raise OSError(f"{self.storage_path}: array at offset {offset} is truncated")
        return np.frombuffer(data, dtype=dt).reshape(dims)[left_offset_frames:right_offset_frames]
