"""Writing a soft-label archive: one dump job's chunks, and the merge that finalizes the archive.

Why chunks: a dump over a large corpus gets killed (preemption, wall-time).
Each chunk's arrays and manifest are written under temporary names and
renamed into place, arrays first, so a chunk manifest only ever points at a
complete arrays file; a killed dump loses at most the chunk it was filling,
and a resumed one skips every cut that a chunk manifest lists.

Storage paths inside the manifests are relative to the archive directory
(``arrays/chunk-1-00000.h5``) so an archive can be moved or copied;
:func:`kdasr.distill.archive.reader.load_archive` resolves them.
"""
from __future__ import annotations

import gzip
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from lhotse import CutSet
from lhotse.array import Array, TemporalArray
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from kdasr.distill.archive.format import (
    ARRAYS_DIR,
    CHUNKS_DIR,
    CUTS_FILE,
    IDS_FIELD,
    LOGP_FIELD,
    LOGP_RANGE_FIELD,
    META_FILE,
    PLAN_FILE,
    ArchiveError,
    ArchiveMeta,
    arrays_suffix,
    chunk_manifests,
    chunk_name,
    encode_log_probs,
)
from kdasr.distill.archive.storage import RawChunkyWriter
from kdasr.utils.h5 import MemoryHdf5Writer
from kdasr.utils.io import Pathlike, atomic_path, save_manifest


def _h5_key(cut_id: str) -> str:
    """An HDF5 dataset name for a cut id: '/' would open a group, so it (and '%') is escaped."""
    return cut_id.replace("%", "%25").replace("/", "%2F")


def _set_storage_path(manifest: Union[Array, TemporalArray], storage_path: str) -> Union[Array, TemporalArray]:
    if isinstance(manifest, TemporalArray):
        return fastcopy(manifest, array=fastcopy(manifest.array, storage_path=storage_path))
    return fastcopy(manifest, storage_path=storage_path)


class SoftLabelWriter:
    """Write one job's soft labels into an archive directory, chunk by chunk.

    ``add`` only buffers; every ``chunk_size`` cuts the buffer becomes
    ``arrays/chunk-<job>-<n>.h5`` (``.bin`` in the compact form) then ``chunks/chunk-<job>-<n>.jsonl.gz``,
    each renamed into place. Leaving a ``with`` block (normally or through an
    exception) writes the partial chunk too: every buffered cut is complete,
    so only a hard kill loses work, and then at most one chunk.

    Jobs of one dump share the directory; ``meta.yaml`` is written when the
    first writer opens it, and a later writer whose meta differs in anything
    that changes the labels (teacher, temperature, k, ...) is refused rather
    than mixing two kinds of labels in one archive.
    """

    def __init__(self, archive_dir: Pathlike, meta: ArchiveMeta, chunk_size: int = 200, job: int = 1) -> None:
        meta.validate()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if job < 1:
            raise ValueError(f"job must be >= 1 (1-based), got {job}")
        self.archive_dir = Path(archive_dir)
        self.meta = meta
        self.chunk_size = chunk_size
        self.job = job
        (self.archive_dir / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
        (self.archive_dir / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
        meta_path = self.archive_dir / META_FILE
        if meta_path.is_file():
            old = ArchiveMeta.from_yaml(meta_path)
            diff = old.same_labels(meta)
            if diff:
                raise ArchiveError(
                    f"{self.archive_dir} already holds soft labels made differently ({'; '.join(diff)}); "
                    "use another directory or delete it"
                )
            self.meta = replace(meta, created=old.created, num_cuts=old.num_cuts)
        else:
            self.meta.to_yaml(meta_path)
        self._remove_stale_temps()
        own = [n for j, n, _ in chunk_manifests(self.archive_dir) if j == job]
        self._next_chunk = max(own) + 1 if own else 0
        self._pending: list[tuple[Cut, np.ndarray, Optional[np.ndarray]]] = []
        self._pending_ids: set[str] = set()
        self._done: Optional[set[str]] = None
        self.num_written = 0

    def _remove_stale_temps(self) -> None:
        """Temporary files this job left when it was killed (other jobs' files are left alone)."""
        prefix = f".{chunk_name(self.job, 0)[:-5]}"
        for sub in (ARRAYS_DIR, CHUNKS_DIR):
            for p in (self.archive_dir / sub).glob(f"{prefix}*.tmp*"):
                logging.info("removing %s left by a killed dump", p)
                p.unlink(missing_ok=True)

    def finished_ids(self) -> set[str]:
        """Ids of cuts already in a finished chunk of any job: a resumed dump skips them."""
        if self._done is None:
            done: set[str] = set()
            for _, _, p in chunk_manifests(self.archive_dir):
                try:
                    done.update(c.id for c in CutSet.from_file(p))
                except Exception as e:
                    raise ArchiveError(f"chunk manifest {p} cannot be read: {e}") from e
            self._done = done
        return set(self._done)

    def add(self, cut: Cut, log_probs: np.ndarray) -> None:
        """Buffer one cut's ``(T', V)`` log-probs (temperature already applied); may write a chunk."""
        if cut.id in self._pending_ids:
            raise ArchiveError(f"cut {cut.id} was added twice to the archive {self.archive_dir}")
        if log_probs.ndim != 2 or log_probs.shape[1] != self.meta.vocab_size:
            raise ValueError(
                f"cut {cut.id}: soft labels of shape {tuple(log_probs.shape)}, expected (frames, {self.meta.vocab_size})"
            )
        logp, ids = encode_log_probs(log_probs, self.meta.k, cut.id, self.meta.quantization, self.meta.logp_range)
        self._pending.append((cut, logp, ids))
        self._pending_ids.add(cut.id)
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered cuts as one chunk (nothing when the buffer is empty)."""
        if not self._pending:
            return
        name = chunk_name(self.job, self._next_chunk)
        rel_path = f"{ARRAYS_DIR}/{name}{arrays_suffix(self.meta)}"
        out_cuts = []
        with atomic_path(self.archive_dir / rel_path) as tmp:
            # HDF5 is built in memory and its bytes written by Python (HDF5 that meets a full disk
            # half-way segfaults at exit); the raw compact form is written by Python already.
            hdf5 = self.meta.quantization is None
            with (MemoryHdf5Writer() if hdf5 else RawChunkyWriter(tmp, mode="wb")) as w:
                for cut, logp, ids in self._pending:
                    key = _h5_key(cut.id)
                    m = w.store_array(
                        key=f"{LOGP_FIELD}/{key}", value=logp, frame_shift=self.meta.frame_shift, temporal_dim=0
                    )
                    c = cut.with_custom(LOGP_FIELD, _set_storage_path(m, rel_path))
                    if ids is not None:
                        m = w.store_array(
                            key=f"{IDS_FIELD}/{key}", value=ids, frame_shift=self.meta.frame_shift, temporal_dim=0
                        )
                        c = c.with_custom(IDS_FIELD, _set_storage_path(m, rel_path))
                    if self.meta.logp_range is not None:
                        c = c.with_custom(LOGP_RANGE_FIELD, float(self.meta.logp_range))
                    out_cuts.append(c)
                image = w.image() if hdf5 else None
            if image is not None:
                tmp.write_bytes(image)
        try:
            save_manifest(CutSet.from_cuts(out_cuts), self.archive_dir / CHUNKS_DIR / f"{name}.jsonl.gz")
        except BaseException:  # arrays without their manifest are no chunk: leave none behind
            (self.archive_dir / rel_path).unlink(missing_ok=True)
            raise
        if self._done is not None:
            self._done.update(self._pending_ids)
        self.num_written += len(out_cuts)
        logging.debug("wrote %s (%d cuts)", name, len(out_cuts))
        self._pending, self._pending_ids = [], set()
        self._next_chunk += 1

    def close(self) -> None:
        """Write the partial chunk; the archive still needs :meth:`finalize` / :func:`merge_jobs`."""
        self.flush()

    def finalize(self) -> CutSet:
        """Close, then merge every job's chunks into ``cuts.jsonl.gz`` and update ``meta.yaml``."""
        self.close()
        return merge_jobs(self.archive_dir)

    def __enter__(self) -> "SoftLabelWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if not (exc_type is not None and issubclass(exc_type, OSError)):  # a full disk: no second try
            self.close()


def job_split(cuts: Sequence[Cut], job: int, num_jobs: int) -> list[Cut]:
    """Job ``job`` (1-based) of ``num_jobs``: a contiguous slice, so every cut lands in exactly one job.

    The same slicing as ``CutSet.split(num_jobs)`` without shuffling, except
    that more jobs than cuts give empty jobs instead of an error (a
    ``$cmd JOB=1:N`` runner always starts N jobs). It only depends on the
    manifest's order, which every job reads from the same file.
    """
    if num_jobs < 1 or not 1 <= job <= num_jobs:
        raise ValueError(f"job {job} must lie in 1..num_jobs ({num_jobs})")
    n = len(cuts)
    lo, rest = divmod(n, num_jobs)
    start = (job - 1) * lo + min(job - 1, rest)
    end = start + lo + (1 if job <= rest else 0)
    return list(cuts[start:end])


def record_plan(archive_dir: Pathlike, cut_ids: Sequence[str], num_jobs: int) -> None:
    """Record what a dump covers, every cut id of its input in order and its number of jobs (``plan.json.gz``).

    Without it a merge after a killed job cannot tell a partial archive from
    a finished one. Every job writes the same plan (atomically); another cut
    list is refused, another number of jobs (a resumed dump split anew)
    replaces the old one.
    """
    path = Path(archive_dir) / PLAN_FILE
    old = read_plan(archive_dir)
    if old is not None:
        if old["cut_ids"] != list(cut_ids):
            raise ArchiveError(
                f"{archive_dir} is being filled from another cut list ({len(old['cut_ids'])} cuts before, "
                f"{len(cut_ids)} now); use another directory or delete it"
            )
        if old["num_jobs"] == num_jobs:
            return
        logging.info("%s: the dump is now split into %d jobs (was %d)", archive_dir, num_jobs, old["num_jobs"])
    with atomic_path(path) as tmp, gzip.open(tmp, "wt") as f:
        json.dump({"num_jobs": int(num_jobs), "cut_ids": list(cut_ids)}, f)


def read_plan(archive_dir: Pathlike) -> Optional[dict]:
    """The plan :func:`record_plan` wrote (``{"num_jobs", "cut_ids"}``), or None for an archive written without one."""
    path = Path(archive_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        with gzip.open(path, "rt") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ArchiveError(f"dump plan {path} cannot be read: {e}") from e


def _missing_message(archive_dir: Path, plan: dict, done: set[str]) -> Optional[str]:
    """What a merge would leave out of ``plan`` (jobs and cut ids), or None when every planned cut is done."""
    ids, num_jobs = plan["cut_ids"], int(plan["num_jobs"])
    jobs = [j for j in range(1, num_jobs + 1) if any(c not in done for c in job_split(ids, j, num_jobs))]
    if not jobs:
        return None
    missing = [c for c in ids if c not in done]
    more = f" ... (+{len(missing) - 5} more)" if len(missing) > 5 else ""
    return (f"{archive_dir}: the dump is incomplete: {len(missing)} of {len(ids)} cuts have no labels yet, "
            f"from job(s) {', '.join(map(str, jobs))} of {num_jobs} (killed or not run): "
            f"{', '.join(missing[:5])}{more}")


def merge_jobs(archive_dir: Pathlike, allow_partial: bool = False) -> CutSet:
    """After all jobs of a dump: merge the chunk manifests into ``cuts.jsonl.gz`` (atomically).

    A dump that recorded its plan (:func:`record_plan`) and is missing cuts is
    refused with the unfinished jobs and cut ids named, unless
    ``allow_partial`` (then it is finalized with a warning). A cut listed by
    two chunks (two jobs resumed with different splits) is kept once, from
    the first chunk in (job, n) order, with a warning.
    """
    archive_dir = Path(archive_dir)
    meta = ArchiveMeta.from_yaml(archive_dir / META_FILE)
    chunks = chunk_manifests(archive_dir)
    if not chunks:
        raise ArchiveError(f"{archive_dir} holds no finished chunk (chunks/chunk-*.jsonl.gz): nothing to merge")
    seen: set[str] = set()
    dups: list[str] = []
    merged = []
    for _, _, p in chunks:
        arrays = archive_dir / ARRAYS_DIR / (p.name[: -len(".jsonl.gz")] + arrays_suffix(meta))
        if not arrays.is_file():
            raise ArchiveError(f"chunk manifest {p} has no arrays file {arrays}")
        for c in CutSet.from_file(p):
            if c.id in seen:
                dups.append(c.id)
                continue
            seen.add(c.id)
            merged.append(c)
    if dups:
        logging.warning("%s: %d cuts appear in two chunks, kept once: %s", archive_dir, len(dups), dups[:5])
    plan = read_plan(archive_dir)
    incomplete = _missing_message(archive_dir, plan, seen) if plan is not None else None
    if incomplete and not allow_partial:
        raise ArchiveError(f"{incomplete}. Rerun those jobs (they resume), or merge with allow_partial "
                           "(`kdasr archive merge --allow-partial`) to finalize the archive without them")
    if incomplete:
        logging.warning("%s; finalized without them (allow_partial)", incomplete)
    cuts = CutSet.from_cuts(merged)
    save_manifest(cuts, archive_dir / CUTS_FILE)
    meta.num_cuts = len(merged)
    meta.to_yaml(archive_dir / META_FILE)
    logging.info("archive %s: %d cuts from %d chunks", archive_dir, len(merged), len(chunks))
    return cuts
