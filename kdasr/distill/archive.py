"""Soft-label archives: a teacher's per-frame distributions, stored as lhotse custom arrays keyed by cut id.

Layout of an archive directory (docs/ARCHITECTURE.md, Soft-label archive)::

    meta.yaml                       teacher, checkpoint, lang hash, vocab size, frame shift,
                                    temperature, k (or dense), view, num_cuts, created
    cuts.jsonl.gz                   every cut, with custom fields ``kd_logp`` (and ``kd_ids``)
    arrays/chunk-<job>-<n>.h5       the arrays (lhotse ``NumpyHdf5Writer``)
    chunks/chunk-<job>-<n>.jsonl.gz the cuts whose arrays live in the matching .h5

Why keyed by cut id: SpeechBrain's KD recipe keyed soft labels by batch
counter, so any change of data order silently paired the wrong labels with
the wrong utterance. Here a label is found through its cut's id only, and the
frame count of every cut is checked against the student before training.

Why chunks: a dump over a large corpus gets killed (preemption, wall-time).
Each chunk's arrays and manifest are written under temporary names and
renamed into place, arrays first, so a chunk manifest only ever points at a
complete arrays file; a killed dump loses at most the chunk it was filling,
and a resumed one skips every cut that a chunk manifest lists.

Storage paths inside the manifests are relative to the archive directory
(``arrays/chunk-1-00000.h5``) so an archive can be moved or copied;
:func:`load_archive` resolves them.

Read labels with :func:`soft_targets` / :func:`load_probs` (or the field's
own ``cut.kd_logp.load()``), not ``cut.load_kd_logp()``: lhotse trims a
temporal array loaded through the cut to ``round(duration / 0.04)`` frames,
which for e.g. a 0.73 s cut is 18 while the model (and the archive) has
``ceil(73 / 4) = 19``.

Top-k storage: ``kd_logp`` is ``(T', k+1)`` float16, the log-probs of the k
most probable tokens (in decreasing order) followed by the log of the mass of
all other tokens; ``kd_ids`` is ``(T', k)`` int16. The remaining mass is
computed as ``logsumexp`` over the tokens left out, which equals
``log(1 - sum(exp(top-k)))`` for a normalised distribution but does not lose
all precision to cancellation when the top-k hold nearly all of the mass.
Every stored log-prob is clamped below at :data:`LOGP_FLOOR` so that float16
never holds ``-inf`` (a remaining mass of exactly 0 is stored as
``exp(LOGP_FLOOR)``, about 1.8e-35: nothing a loss can notice).
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from lhotse import CutSet
from lhotse.array import Array, TemporalArray
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from tqdm import tqdm

from kdasr.models.common import SUBSAMPLING, output_lengths
from kdasr.utils.h5 import MemoryHdf5Writer
from kdasr.utils.io import Pathlike, atomic_path, atomic_write_text, save_manifest

FRAME_SHIFT = 0.04
"""Output frame shift of every model (10 ms features subsampled by 4), in seconds."""

LOGP_FLOOR = -80.0
"""Smallest log-prob stored: float16 holds it exactly, and ``exp`` of it is ~1.8e-35."""

MAX_INT16_VOCAB = int(np.iinfo(np.int16).max) + 1
"""Top-k ids are int16, so a top-k archive supports vocabularies up to 32768 tokens."""

META_FILE = "meta.yaml"
CUTS_FILE = "cuts.jsonl.gz"
ARRAYS_DIR = "arrays"
CHUNKS_DIR = "chunks"
LOGP_FIELD = "kd_logp"
IDS_FIELD = "kd_ids"
_CHUNK_RE = re.compile(r"^chunk-(\d+)-(\d+)\.jsonl\.gz$")


class ArchiveError(RuntimeError):
    """An archive directory that cannot be read or written as asked."""


class ArchiveMismatchError(ValueError):
    """An archive that does not fit a student (cuts, frames, tokens or frame shift)."""


# --------------------------------------------------------------------------- meta


@dataclass
class ArchiveMeta:
    """What produced an archive; checked against the student before any training step.

    ``k=None`` means dense storage (the whole distribution), which is what a
    small vocabulary (characters, phones) should use: top-k saves little there
    and loses the tail.
    """

    teacher: str
    checkpoint: str
    lang_hash: str
    vocab_size: int
    frame_shift: float = FRAME_SHIFT
    temperature: float = 1.0
    k: Optional[int] = None
    view: str = "wb"
    num_cuts: int = 0
    created: str = field(default_factory=lambda: _dt.datetime.now().isoformat(timespec="seconds"))

    @property
    def dense(self) -> bool:
        return self.k is None

    def validate(self) -> None:
        """Reject metadata no archive can be written with (raises ``ValueError``)."""
        if self.vocab_size < 2:
            raise ValueError(f"archive of teacher {self.teacher!r}: vocab_size must be >= 2, got {self.vocab_size}")
        if not self.temperature > 0:
            raise ValueError(f"archive of teacher {self.teacher!r}: temperature must be > 0, got {self.temperature}")
        if self.k is not None:
            if not 1 <= self.k < self.vocab_size:
                raise ValueError(
                    f"archive of teacher {self.teacher!r}: k={self.k} must lie in 1..vocab_size-1 "
                    f"({self.vocab_size - 1}); store the whole distribution with k=None (dense) instead"
                )
            if self.vocab_size > MAX_INT16_VOCAB:
                raise ValueError(
                    f"archive of teacher {self.teacher!r}: vocab_size {self.vocab_size} does not fit the int16 "
                    f"token ids of a top-k archive (at most {MAX_INT16_VOCAB})"
                )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["k"] = "dense" if self.k is None else int(self.k)
        return d

    @classmethod
    def from_dict(cls, data: dict, where: str = "archive meta") -> "ArchiveMeta":
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logging.warning("%s: ignoring unknown keys %s", where, unknown)
        missing = [n for n in ("teacher", "checkpoint", "lang_hash", "vocab_size") if n not in data]
        if missing:
            raise ArchiveError(f"{where}: missing keys {missing}")
        if "created" in data:
            data["created"] = str(data["created"])
        k = data.get("k")
        data["k"] = None if k in (None, "dense") else int(k)
        return cls(**{n: data[n] for n in known if n in data})

    def to_yaml(self, path: Pathlike) -> None:
        """Write ``meta.yaml`` atomically."""
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: Pathlike) -> "ArchiveMeta":
        path = Path(path)
        if not path.is_file():
            raise ArchiveError(f"{path} does not exist: not a soft-label archive, or its dump never started")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ArchiveError(f"{path} is not valid YAML: {e}") from e
        return cls.from_dict(data, where=str(path))

    def same_labels(self, other: "ArchiveMeta") -> list[str]:
        """Fields (other than num_cuts/created) whose values differ: labels that must not be mixed."""
        skip = {"num_cuts", "created"}
        return [
            f"{f.name}: {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}"
            for f in fields(self)
            if f.name not in skip and getattr(self, f.name) != getattr(other, f.name)
        ]


DENSE_MAX_VOCAB = 64
"""Largest vocabulary that :func:`default_k` stores dense."""

DEFAULT_TOP_K = 8
"""k that :func:`default_k` picks above :data:`DENSE_MAX_VOCAB` tokens."""


def payload_bytes_per_frame(vocab_size: int, k: Optional[int]) -> int:
    """Array bytes one output frame takes: ``2V`` dense (float16), ``2(k+1) + 2k`` top-k (float16 + int16)."""
    return 2 * vocab_size if k is None else 2 * (k + 1) + 2 * k


def default_k(vocab_size: int) -> Optional[int]:
    """Storage a dump uses when none is asked for: dense up to 64 tokens, else top-8 (``None`` = dense).

    Why, in archive bytes per frame (:func:`payload_bytes_per_frame`): top-8
    costs 34 B whatever the vocabulary. Dense costs 2V B: 60 B for 30
    characters, where top-8 would save less than half and throw the tail
    away; 1000 B for 500 BPE pieces, 30x the top-8 archive (at 25 frames per
    second, 90 GB instead of 3 GB for 1000 h), while the top 8 of a trained
    CTC model hold nearly all of each frame's mass. 64 tokens (128 B dense,
    under 4x top-8) is where the saving starts to matter.
    """
    return None if vocab_size <= DENSE_MAX_VOCAB else DEFAULT_TOP_K


# --------------------------------------------------------------------------- encoding


def encode_log_probs(log_probs: np.ndarray, k: Optional[int], cut_id: str = "?") -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Turn ``(T', V)`` log-probs into what an archive stores: ``(logp, ids)`` (``ids`` None when dense).

    The rows must be normalised log-probabilities (``log_softmax`` output): a
    row whose ``logsumexp`` is far from 0 almost always means logits were
    passed by mistake, and would make the remaining-mass column meaningless.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"cut {cut_id}: soft labels must be (frames, vocab), got shape {lp.shape}")
    if lp.shape[0] > 0:
        if not np.all(np.isfinite(lp) | (lp == -np.inf)) or np.any(lp > 1e-3):
            raise ValueError(f"cut {cut_id}: soft labels contain NaN/+inf or positive log-probs (pass log_softmax output)")
        lse = _logsumexp(lp, axis=1)
        worst = float(np.max(np.abs(lse)))
        if worst > 1e-2:
            raise ValueError(
                f"cut {cut_id}: rows of the soft labels are not normalised log-probs "
                f"(|logsumexp| up to {worst:.3g}); pass log_softmax(logits / T), not logits"
            )
    if k is None:
        return np.maximum(lp, LOGP_FLOOR).astype(np.float16), None
    V = lp.shape[1]
    if not 1 <= k < V:
        raise ValueError(f"cut {cut_id}: k={k} must lie in 1..{V - 1} for a vocabulary of {V}")
    # indices of the k largest per row, in decreasing order (ties: lowest id first, stable)
    order = np.argsort(-lp, axis=1, kind="stable")
    ids = order[:, :k]
    rest_idx = order[:, k:]
    top = np.take_along_axis(lp, ids, axis=1)
    rest = _logsumexp(np.take_along_axis(lp, rest_idx, axis=1), axis=1) if lp.shape[0] else np.zeros(0)
    logp = np.concatenate([top, rest[:, None]], axis=1)
    return np.maximum(logp, LOGP_FLOOR).astype(np.float16), ids.astype(np.int16)


def decode_probs(logp: np.ndarray, ids: Optional[np.ndarray], vocab_size: int, cut_id: str = "?") -> np.ndarray:
    """Stored arrays back to a full ``(T', V)`` float32 probability matrix.

    Top-k: the k stored tokens get their stored probability; the remaining
    mass (last column) is spread uniformly over the other ``V - k`` tokens.
    A teacher's tail is not uniform, but the top-k of a trained CTC model hold
    nearly all of the mass, so the shape of the tail barely moves a KL or CE
    loss while keeping the distribution proper (no token gets probability 0,
    so the student is never pushed towards -inf on a token).
    Rows are renormalised to sum to 1, which removes the float16 rounding.
    """
    logp = np.asarray(logp, dtype=np.float32)
    if ids is None:
        if logp.ndim != 2 or logp.shape[1] != vocab_size:
            raise ArchiveMismatchError(f"cut {cut_id}: dense soft labels of shape {logp.shape}, expected (T', {vocab_size})")
        probs = np.exp(logp)
    else:
        k = ids.shape[1]
        if logp.shape != (ids.shape[0], k + 1):
            raise ArchiveMismatchError(f"cut {cut_id}: kd_logp {logp.shape} does not match kd_ids {ids.shape} (expected (T', k+1))")
        if k >= vocab_size:
            raise ArchiveMismatchError(f"cut {cut_id}: top-{k} labels cannot come from a vocabulary of {vocab_size}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ArchiveMismatchError(f"cut {cut_id}: token ids outside 0..{vocab_size - 1} in kd_ids")
        rest = np.exp(logp[:, k]) / (vocab_size - k)
        probs = np.repeat(rest[:, None], vocab_size, axis=1)
        np.put_along_axis(probs, ids, np.exp(logp[:, :k]), axis=1)
    total = probs.sum(axis=1, keepdims=True)
    return (probs / np.maximum(total, 1e-30)).astype(np.float32)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    if x.shape[axis] == 0:
        return np.full(x.shape[:axis] + x.shape[axis + 1 :], -np.inf)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


# --------------------------------------------------------------------------- writer


def _chunk_manifests(archive_dir: Path) -> list[tuple[int, int, Path]]:
    """Finished chunk manifests as (job, n, path), in (job, n) order."""
    out = []
    d = archive_dir / CHUNKS_DIR
    if d.is_dir():
        for p in d.iterdir():
            m = _CHUNK_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(out)


def _chunk_name(job: int, n: int) -> str:
    return f"chunk-{job}-{n:05d}"


def _relocate(cut: Cut, prefix: Path) -> Cut:
    """A copy of ``cut`` whose kd arrays' storage paths are prefixed by ``prefix``."""
    custom = dict(cut.custom or {})
    for name in (LOGP_FIELD, IDS_FIELD):
        v = custom.get(name)
        if isinstance(v, (Array, TemporalArray)):
            custom[name] = v.with_path_prefix(prefix)
    return fastcopy(cut, custom=custom)


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
    ``arrays/chunk-<job>-<n>.h5`` then ``chunks/chunk-<job>-<n>.jsonl.gz``,
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
        own = [n for j, n, _ in _chunk_manifests(self.archive_dir) if j == job]
        self._next_chunk = max(own) + 1 if own else 0
        self._pending: list[tuple[Cut, np.ndarray, Optional[np.ndarray]]] = []
        self._pending_ids: set[str] = set()
        self._done: Optional[set[str]] = None
        self.num_written = 0

    def _remove_stale_temps(self) -> None:
        """Temporary files this job left when it was killed (other jobs' files are left alone)."""
        prefix = f".{_chunk_name(self.job, 0)[:-5]}"
        for sub in (ARRAYS_DIR, CHUNKS_DIR):
            for p in (self.archive_dir / sub).glob(f"{prefix}*.tmp*"):
                logging.info("removing %s left by a killed dump", p)
                p.unlink(missing_ok=True)

    def finished_ids(self) -> set[str]:
        """Ids of cuts already in a finished chunk of any job: a resumed dump skips them."""
        if self._done is None:
            done: set[str] = set()
            for _, _, p in _chunk_manifests(self.archive_dir):
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
        logp, ids = encode_log_probs(log_probs, self.meta.k, cut.id)
        self._pending.append((cut, logp, ids))
        self._pending_ids.add(cut.id)
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered cuts as one chunk (nothing when the buffer is empty)."""
        if not self._pending:
            return
        name = _chunk_name(self.job, self._next_chunk)
        rel_h5 = f"{ARRAYS_DIR}/{name}.h5"
        out_cuts = []
        with MemoryHdf5Writer() as w:  # HDF5 never meets a full disk: Python writes its bytes
            for cut, logp, ids in self._pending:
                key = _h5_key(cut.id)
                m = w.store_array(
                    key=f"{LOGP_FIELD}/{key}", value=logp, frame_shift=self.meta.frame_shift, temporal_dim=0
                )
                c = cut.with_custom(LOGP_FIELD, _set_storage_path(m, rel_h5))
                if ids is not None:
                    m = w.store_array(
                        key=f"{IDS_FIELD}/{key}", value=ids, frame_shift=self.meta.frame_shift, temporal_dim=0
                    )
                    c = c.with_custom(IDS_FIELD, _set_storage_path(m, rel_h5))
                out_cuts.append(c)
            image = w.image()
        with atomic_path(self.archive_dir / rel_h5) as tmp:
            tmp.write_bytes(image)
        try:
            save_manifest(CutSet.from_cuts(out_cuts), self.archive_dir / CHUNKS_DIR / f"{name}.jsonl.gz")
        except BaseException:  # arrays without their manifest are no chunk: leave none behind
            (self.archive_dir / rel_h5).unlink(missing_ok=True)
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


def merge_jobs(archive_dir: Pathlike) -> CutSet:
    """After all jobs of a dump: merge the chunk manifests into ``cuts.jsonl.gz`` (atomically).

    A cut listed by two chunks (two jobs resumed with different splits) is
    kept once, from the first chunk in (job, n) order, with a warning.
    """
    archive_dir = Path(archive_dir)
    meta = ArchiveMeta.from_yaml(archive_dir / META_FILE)
    chunks = _chunk_manifests(archive_dir)
    if not chunks:
        raise ArchiveError(f"{archive_dir} holds no finished chunk (chunks/chunk-*.jsonl.gz): nothing to merge")
    seen: set[str] = set()
    dups: list[str] = []
    merged = []
    for _, _, p in chunks:
        h5 = archive_dir / ARRAYS_DIR / (p.name[: -len(".jsonl.gz")] + ".h5")
        if not h5.is_file():
            raise ArchiveError(f"chunk manifest {p} has no arrays file {h5}")
        for c in CutSet.from_file(p):
            if c.id in seen:
                dups.append(c.id)
                continue
            seen.add(c.id)
            merged.append(c)
    if dups:
        logging.warning("%s: %d cuts appear in two chunks, kept once: %s", archive_dir, len(dups), dups[:5])
    cuts = CutSet.from_cuts(merged)
    save_manifest(cuts, archive_dir / CUTS_FILE)
    meta.num_cuts = len(merged)
    meta.to_yaml(archive_dir / META_FILE)
    logging.info("archive %s: %d cuts from %d chunks", archive_dir, len(merged), len(chunks))
    return cuts


# --------------------------------------------------------------------------- dump


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


def _batches(cuts: list[Cut], batch_size: Optional[int], max_duration: Optional[float]) -> Iterator[list[Cut]]:
    """Cuts sorted by duration (longest first) grouped so that padded duration stays under ``max_duration``."""
    cuts = sorted(cuts, key=lambda c: (-c.duration, c.id))
    batch: list[Cut] = []
    for c in cuts:
        longest = batch[0].duration if batch else c.duration
        full = (batch_size is not None and len(batch) >= batch_size) or (
            max_duration is not None and batch and longest * (len(batch) + 1) > max_duration
        )
        if full:
            yield batch
            batch = []
        batch.append(c)
    if batch:
        yield batch


def _load_feats(cut: Cut) -> np.ndarray:
    if not cut.has_features:
        raise ArchiveError(f"cut {cut.id} has no precomputed features: run `kdasr prepare fbank` first")
    try:
        return cut.load_features()
    except Exception as e:
        raise ArchiveError(f"cannot load the features of cut {cut.id} ({cut.features.storage_path}): {e}") from e


@torch.inference_mode()
def dump_soft_labels(
    model: torch.nn.Module,
    cuts: Iterable[Cut],
    archive_dir: Pathlike,
    meta: ArchiveMeta,
    batch_size: Optional[int] = None,
    max_duration: Optional[float] = 200.0,
    device: Union[str, torch.device] = "cpu",
    job: int = 1,
    num_jobs: int = 1,
    chunk_size: int = 200,
    progress: bool = True,
    model_inputs: Optional[Callable[[list[Cut]], dict]] = None,
) -> dict:
    """Run ``model`` (Model contract) over this job's share of ``cuts`` and write its soft labels.

    The teacher sees each cut's precomputed features; its logits are divided
    by ``meta.temperature`` and log-softmaxed, and only the first
    ``out_lens[i]`` frames are kept, so padding never leaks into a label.
    ``out_lens`` must equal ``ceil(T/4)`` (the Frames contract): a teacher
    that breaks it would write labels no student could align with, so the
    dump stops at the first such cut instead. ``model_inputs(batch_cuts)``
    gives extra keyword inputs of the model (tensors are moved to ``device``),
    e.g. the transcripts an Oracle Teacher reads (kdasr.distill.oracle).

    Cuts already in a finished chunk (of any job) are skipped, so rerunning a
    killed job resumes it. With ``num_jobs == 1`` the archive is finalized at
    the end; otherwise call :func:`merge_jobs` after every job has finished.
    Returns counts and speed (``xrt``: seconds of audio per second of wall time).
    """
    meta.validate()
    all_cuts = list(cuts)
    mine = job_split(all_cuts, job, num_jobs)
    device = torch.device(device)
    model = model.to(device).eval()
    t0 = time.time()
    stats = {"cuts": len(mine), "done": 0, "skipped": 0, "frames": 0, "audio_seconds": 0.0}
    with SoftLabelWriter(archive_dir, meta, chunk_size=chunk_size, job=job) as writer:
        finished = writer.finished_ids()
        todo = [c for c in mine if c.id not in finished]
        stats["skipped"] = len(mine) - len(todo)
        if stats["skipped"]:
            logging.info("job %d/%d: %d of %d cuts already in the archive, skipped", job, num_jobs, stats["skipped"], len(mine))
        bar = tqdm(total=len(todo), desc=f"soft labels {job}/{num_jobs}", unit="cut", disable=not progress)
        for batch in _batches(todo, batch_size, max_duration):
            feats = [_load_feats(c) for c in batch]
            lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
            x = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1], dtype=torch.float32)
            for i, f in enumerate(feats):
                x[i, : f.shape[0]] = torch.from_numpy(np.asarray(f, dtype=np.float32))
            extra = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in (model_inputs(batch) if model_inputs else {}).items()}
            logits, out_lens = model(x.to(device), lens.to(device), **extra)
            if logits.shape[-1] != meta.vocab_size:
                raise ArchiveError(
                    f"teacher {meta.teacher} outputs {logits.shape[-1]} tokens but the archive says vocab_size "
                    f"{meta.vocab_size} (cuts {[c.id for c in batch][:4]})"
                )
            logp = torch.log_softmax(logits.float() / meta.temperature, dim=-1).cpu().numpy()
            out_lens = out_lens.cpu().tolist()
            for i, c in enumerate(batch):
                expect = output_lengths(int(lens[i]))
                if int(out_lens[i]) != expect or int(out_lens[i]) > logp.shape[1]:
                    raise ArchiveError(
                        f"cut {c.id}: teacher {meta.teacher} gives {out_lens[i]} output frames for {int(lens[i])} "
                        f"feature frames, the Frames contract says ceil(T/{SUBSAMPLING}) = {expect}"
                    )
                writer.add(c, logp[i, : out_lens[i]])
                stats["frames"] += int(out_lens[i])
                stats["audio_seconds"] += c.duration
            stats["done"] += len(batch)
            bar.update(len(batch))
        bar.close()
    if num_jobs == 1:
        merge_jobs(archive_dir)
    wall = time.time() - t0
    stats["wall_seconds"] = wall
    stats["xrt"] = stats["audio_seconds"] / wall if wall > 0 else float("inf")
    logging.info(
        "job %d/%d: %d cuts (%.1f s of audio, %d frames) in %.1f s: %.1fx real time",
        job, num_jobs, stats["done"], stats["audio_seconds"], stats["frames"], wall, stats["xrt"],
    )
    return stats


def teacher_name_from_checkpoint(checkpoint: Pathlike) -> str:
    """The experiment directory's name: ``exp/vgg_wb/best.pt`` and ``exp/vgg_wb/checkpoints/checkpoint-5.pt`` give ``vgg_wb``."""
    parent = Path(checkpoint).absolute().parent
    if parent.name == "checkpoints":
        parent = parent.parent
    return parent.name


def view_from_cuts_path(cuts_path: Pathlike) -> Optional[str]:
    """``wb``/``nb`` from a ``cuts_<part>_<view>.jsonl.gz`` name (``prepare fbank``'s naming), else None."""
    m = re.search(r"_(wb|nb)\.jsonl(\.gz)?$", Path(cuts_path).name)
    return m.group(1) if m else None


def dump_from_checkpoint(
    checkpoint: Pathlike,
    cuts_path: Pathlike,
    archive_dir: Pathlike,
    k: Union[int, str, None] = "auto",
    temperature: float = 1.0,
    teacher: Optional[str] = None,
    view: Optional[str] = None,
    device: str = "auto",
    max_duration: Optional[float] = 200.0,
    job: int = 1,
    num_jobs: int = 1,
    chunk_size: int = 200,
    progress: bool = True,
) -> dict:
    """Load a teacher checkpoint and dump its soft labels for job ``job`` of ``num_jobs`` (``kdasr soft-labels``).

    ``k``: an int for top-k, ``None`` for dense, ``"auto"`` for
    :func:`default_k` of the checkpoint's vocabulary. The meta records the
    checkpoint path as given, the checkpoint's lang hash, and ``teacher``
    (default: :func:`teacher_name_from_checkpoint`) and ``view`` (default:
    from the cuts file name, else ``wb``). Returns :func:`dump_soft_labels`'s
    stats plus ``meta``.
    """
    from kdasr.train.checkpoint import load_model

    try:
        model, ckpt = load_model(checkpoint)
    except (FileNotFoundError, RuntimeError, KeyError) as e:
        raise ArchiveError(f"cannot load teacher checkpoint {checkpoint}: {e}") from e
    vocab_size = int(ckpt["vocab_size"])
    if not ckpt.get("lang_hash"):
        raise ArchiveError(f"teacher checkpoint {checkpoint} records no lang_hash: no student could be checked against it")
    if k == "auto":
        k = default_k(vocab_size)
    elif isinstance(k, str):
        raise ValueError(f"k must be an int, None (dense) or 'auto', got {k!r}")
    try:
        cuts = CutSet.from_file(cuts_path).to_eager()
    except Exception as e:
        raise ArchiveError(f"cannot read cuts {cuts_path}: {e}") from e
    first = next(iter(cuts), None)
    if first is not None and first.has_features and first.num_features != ckpt["num_features"]:
        raise ArchiveMismatchError(
            f"cut {first.id} in {cuts_path} has {first.num_features} features per frame but teacher {checkpoint} "
            f"expects {ckpt['num_features']} (wrong view or fbank settings?)"
        )
    meta = ArchiveMeta(
        teacher=teacher or teacher_name_from_checkpoint(checkpoint),
        checkpoint=str(checkpoint),
        lang_hash=str(ckpt["lang_hash"]),
        vocab_size=vocab_size,
        frame_shift=FRAME_SHIFT,
        temperature=float(temperature),
        k=None if k is None else int(k),
        view=view or view_from_cuts_path(cuts_path) or "wb",
    )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from kdasr.distill.oracle import dump_inputs  # the Oracle Teacher also reads each cut's transcript

    stats = dump_soft_labels(model, cuts, archive_dir, meta, max_duration=max_duration, device=device,
                             job=job, num_jobs=num_jobs, chunk_size=chunk_size, progress=progress,
                             model_inputs=dump_inputs(ckpt))
    stats["meta"] = meta
    return stats


# --------------------------------------------------------------------------- read


def load_archive(archive_dir: Pathlike) -> tuple[ArchiveMeta, CutSet]:
    """``(meta, cuts)`` of a finalized archive, with storage paths resolved against ``archive_dir``."""
    archive_dir = Path(archive_dir)
    meta = ArchiveMeta.from_yaml(archive_dir / META_FILE)
    path = archive_dir / CUTS_FILE
    if not path.is_file():
        hint = " (chunks exist: run merge_jobs / the merge step after all jobs)" if _chunk_manifests(archive_dir) else ""
        raise ArchiveError(f"{path} does not exist: the archive was not finalized{hint}")
    try:
        cuts = CutSet.from_file(path)
    except Exception as e:
        raise ArchiveError(f"{path} cannot be read: {e}") from e
    return meta, CutSet.from_cuts(_relocate(c, archive_dir) for c in cuts)


def archive_frames(cut: Cut) -> int:
    """Number of output frames a cut's soft labels hold (read from the manifest, no array I/O)."""
    m = (cut.custom or {}).get(LOGP_FIELD)
    if m is None:
        raise ArchiveMismatchError(f"cut {cut.id} carries no {LOGP_FIELD} field: not a soft-label archive cut")
    return int(m.shape[0])


def load_probs(cut: Cut, vocab_size: int) -> np.ndarray:
    """One archive cut's full ``(T', V)`` float32 probabilities (see :func:`decode_probs`)."""
    custom = cut.custom or {}
    if LOGP_FIELD not in custom:
        raise ArchiveMismatchError(f"cut {cut.id} carries no {LOGP_FIELD} field: not a soft-label archive cut")
    try:
        logp = custom[LOGP_FIELD].load()
        ids = custom[IDS_FIELD].load() if IDS_FIELD in custom else None
    except Exception as e:
        path = custom[LOGP_FIELD].array.storage_path if isinstance(custom[LOGP_FIELD], TemporalArray) else "?"
        raise ArchiveError(f"cannot read the soft labels of cut {cut.id} from {path}: {e}") from e
    return decode_probs(logp, ids, vocab_size, cut.id)


def soft_targets(
    cut_or_cuts: Union[Cut, Iterable[Cut]], vocab_size: Optional[int] = None
) -> Union[np.ndarray, list[np.ndarray]]:
    """Full ``(T', V)`` probabilities of one archive cut, or a list of them for several cuts.

    Dense archives know V from the array; top-k archives need ``vocab_size``
    (``meta.vocab_size``). Top-k rows get the remaining mass spread uniformly
    over the ``V - k`` tokens not stored (see :func:`decode_probs`).
    """
    def one(c: Cut) -> np.ndarray:
        V = vocab_size
        if V is None:
            if IDS_FIELD in (c.custom or {}):
                raise ValueError(f"cut {c.id}: a top-k archive needs vocab_size (meta.vocab_size) to expand its labels")
            V = int(c.custom[LOGP_FIELD].shape[1])
        return load_probs(c, V)

    if isinstance(cut_or_cuts, Cut):
        return one(cut_or_cuts)
    return [one(c) for c in cut_or_cuts]


# --------------------------------------------------------------------------- info / checks


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def archive_info(archive_dir: Pathlike, cuts: Optional[Iterable[Cut]] = None) -> dict:
    """Size and coverage of an archive (finalized, or the chunks of a dump still running).

    ``bytes_on_disk`` counts every file under the directory (arrays, both
    kinds of manifests, meta), which is what a disk quota sees.
    """
    archive_dir = Path(archive_dir)
    meta = ArchiveMeta.from_yaml(archive_dir / META_FILE)
    finalized = (archive_dir / CUTS_FILE).is_file()
    if finalized:
        arch = CutSet.from_file(archive_dir / CUTS_FILE)
    else:
        arch = CutSet.from_cuts(c for _, _, p in _chunk_manifests(archive_dir) for c in CutSet.from_file(p))
    frames = {c.id: archive_frames(c) for c in arch}
    total = sum(frames.values())
    nbytes = _dir_bytes(archive_dir)
    info: dict = {
        "archive": str(archive_dir),
        "teacher": meta.teacher,
        "checkpoint": meta.checkpoint,
        "lang_hash": meta.lang_hash,
        "storage": "dense" if meta.dense else f"top-{meta.k}",
        "k": meta.k,
        "vocab_size": meta.vocab_size,
        "temperature": meta.temperature,
        "frame_shift": meta.frame_shift,
        "view": meta.view,
        "finalized": finalized,
        "num_cuts": len(frames),
        "total_frames": total,
        "hours": total * meta.frame_shift / 3600.0,
        "bytes_on_disk": nbytes,
        "bytes_per_frame": nbytes / total if total else float("nan"),
    }
    if cuts is not None:
        want = {_orig_id(c) for c in cuts}
        covered = len(want & frames.keys())
        info["coverage"] = {
            "cuts": len(want),
            "covered": covered,
            "missing": len(want) - covered,
            "fraction": covered / len(want) if want else 1.0,
        }
    return info


def archive_spike_agreement(
    dir_a: Pathlike, dir_b: Pathlike, max_cuts: Optional[int] = None, aligned: bool = False
) -> dict:
    """Spike agreement of two teachers' archives on the cuts both hold (see :func:`spike_agreement`).

    Why it matters: frame-level KD and frame-level averaging of teachers
    assume the models spike on the same frames; two independently trained
    CTC models often do not. Reports A→B and B→A (directed: A's spike frames
    where B's argmax is the same token) and the symmetric IoU, over the
    first ``max_cuts`` common cut ids in sorted order (all by default).
    ``aligned`` adds A→B after B's labels are re-timed onto A's spikes (A's
    best path forced-aligned to both, as ``kd.align_spikes`` does with the
    transcript): how much of the disagreement is timing alone.
    """
    import torch

    from kdasr.distill.align import align_to_anchor
    from kdasr.distill.losses import spike_agreement

    meta_a, cuts_a = load_archive(dir_a)
    meta_b, cuts_b = load_archive(dir_b)
    if meta_a.vocab_size != meta_b.vocab_size or meta_a.lang_hash != meta_b.lang_hash:
        raise ArchiveMismatchError(f"{dir_a} and {dir_b} label different token sets: spikes cannot be compared")
    by_id_b = {c.id: c for c in cuts_b}
    common = sorted(c.id for c in cuts_a if c.id in by_id_b)
    if max_cuts is not None:
        common = common[:max_cuts]
    if not common:
        raise ArchiveMismatchError(f"{dir_a} and {dir_b} have no cut id in common")
    by_id_a = {c.id: c for c in cuts_a}
    arg_a, arg_b, arg_b_al = [], [], []
    for cid in common:
        pa, pb = load_probs(by_id_a[cid], meta_a.vocab_size), load_probs(by_id_b[cid], meta_b.vocab_size)
        if pa.shape[0] != pb.shape[0]:
            raise ArchiveMismatchError(f"cut {cid}: {pa.shape[0]} frames in {dir_a}, {pb.shape[0]} in {dir_b}")
        arg_a.append(pa.argmax(axis=1))
        arg_b.append(pb.argmax(axis=1))
        if aligned:
            arg_b_al.append(align_to_anchor(pa, pb).argmax(axis=1))

    # One long utterance of argmax one-hots: only the argmax matters to spike_agreement.
    def onehot(args: list[np.ndarray]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.from_numpy(np.concatenate(args)), meta_a.vocab_size).unsqueeze(0)

    a, b = onehot(arg_a), onehot(arg_b)
    lens = torch.tensor([a.shape[1]])
    out = {
        "a": meta_a.teacher,
        "b": meta_b.teacher,
        "cuts": len(common),
        "frames": int(a.shape[1]),
        "a_to_b": spike_agreement(a, b, lens),
        "b_to_a": spike_agreement(b, a, lens),
        "symmetric": spike_agreement(a, b, lens, symmetric=True),
    }
    if aligned:
        out["a_to_b_aligned"] = spike_agreement(a, onehot(arg_b_al), lens)
    return out


def _orig_id(cut: Cut) -> str:
    """The id an archive knows a cut by: ``orig_id`` for the copies multistream training makes."""
    custom = cut.custom or {}
    return str(custom.get("orig_id", cut.id))


def _fmt_ids(items: list[str], n: int = 5) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_loaded(
    meta: ArchiveMeta,
    archive_frames_by_id: dict[str, int],
    student_cuts: Iterable[Cut],
    lang_hash: Optional[str],
    frame_shift: float = FRAME_SHIFT,
    vocab_size: Optional[int] = None,
    where: str = "archive",
) -> list[str]:
    """:func:`check_archive` on an archive already in memory (``{cut id: frames}``)."""
    problems: list[str] = []
    if lang_hash is not None and meta.lang_hash != lang_hash:
        problems.append(
            f"{where}: token set differs: archive lang hash {meta.lang_hash[:12]}..., student {lang_hash[:12]}... "
            "(teacher and student must use the same data/lang_* directory)"
        )
    if vocab_size is not None and meta.vocab_size != vocab_size:
        problems.append(f"{where}: vocab size {meta.vocab_size}, student {vocab_size}")
    if not math.isclose(meta.frame_shift, frame_shift, rel_tol=1e-6, abs_tol=1e-9):
        problems.append(f"{where}: frame shift {meta.frame_shift} s, student {frame_shift} s")
    missing: list[str] = []
    no_feats: list[str] = []
    bad_frames: list[str] = []
    bad_shift: list[str] = []
    n = 0
    for c in student_cuts:
        n += 1
        key = _orig_id(c)
        if key not in archive_frames_by_id:
            missing.append(key)
            continue
        if not c.has_features:
            no_feats.append(c.id)
            continue
        fs = c.features.frame_shift * SUBSAMPLING
        if not math.isclose(fs, meta.frame_shift, rel_tol=1e-6, abs_tol=1e-9):
            bad_shift.append(f"{c.id} ({c.features.frame_shift} s x {SUBSAMPLING})")
        want = output_lengths(int(c.num_frames))
        got = archive_frames_by_id[key]
        if got != want:
            bad_frames.append(f"{c.id}: archive {got}, student {want} = ceil({c.num_frames}/{SUBSAMPLING})")
    if missing:
        problems.append(f"{where}: {len(missing)} of {n} student cuts have no soft labels: {_fmt_ids(missing)}")
    if no_feats:
        problems.append(f"{where}: {len(no_feats)} student cuts have no features: {_fmt_ids(no_feats)}")
    if bad_shift:
        problems.append(f"{where}: {len(bad_shift)} student cuts have another output frame shift: {_fmt_ids(bad_shift)}")
    if bad_frames:
        problems.append(
            f"{where}: {len(bad_frames)} cuts have a different number of output frames "
            f"(speed perturbation, other features or a model breaking ceil(T/4)?): {_fmt_ids(bad_frames, 3)}"
        )
    return problems


def check_archive(
    archive_dir: Pathlike,
    student_cuts: Iterable[Cut],
    lang_hash: Optional[str],
    frame_shift: float = FRAME_SHIFT,
    vocab_size: Optional[int] = None,
) -> list[str]:
    """Every reason ``archive_dir`` cannot teach a student trained on ``student_cuts`` (empty: fine).

    Checks: every student cut has labels (by ``orig_id`` when present); per
    cut, archive frames == ``ceil(student feature frames / 4)``; the lang hash
    (and vocab size, if given) matches; the archive's and the student
    features' output frame shift match ``frame_shift``.
    """
    meta, arch = load_archive(archive_dir)
    frames = {c.id: archive_frames(c) for c in arch}
    return check_loaded(meta, frames, student_cuts, lang_hash, frame_shift, vocab_size, where=str(archive_dir))


def ensure_compatible(
    archive_dir: Pathlike,
    student_cuts: Iterable[Cut],
    lang_hash: Optional[str],
    frame_shift: float = FRAME_SHIFT,
    vocab_size: Optional[int] = None,
) -> ArchiveMeta:
    """:func:`check_archive`, raising :class:`ArchiveMismatchError` listing every problem; returns the meta."""
    problems = check_archive(archive_dir, student_cuts, lang_hash, frame_shift, vocab_size)
    if problems:
        raise ArchiveMismatchError(
            f"soft-label archive {archive_dir} does not fit the student:\n  - " + "\n  - ".join(problems)
        )
    return ArchiveMeta.from_yaml(Path(archive_dir) / META_FILE)
