"""What a soft-label archive stores and how: layout, ``meta.yaml``, and the array codec.

Layout of an archive directory (docs/ARCHITECTURE.md, Soft-label archive)::

    meta.yaml                       teacher, checkpoint, lang hash, vocab size, frame shift,
                                    temperature, k (or dense), view, num_cuts, created
    cuts.jsonl.gz                   every cut, with custom fields ``kd_logp`` (and ``kd_ids``)
    arrays/chunk-<job>-<n>.h5       the arrays (lhotse ``NumpyHdf5Writer``; ``.bin``: the compact
                                    form's raw bytes, :mod:`kdasr.distill.archive.storage`)
    chunks/chunk-<job>-<n>.jsonl.gz the cuts whose arrays live in the matching arrays file
    plan.json.gz                    what the dump covers: its cut ids and number of jobs

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
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from kdasr.errors import KdasrError
from kdasr.models.common import FRAME_SHIFT
from kdasr.utils.io import Pathlike, atomic_write_text

LOGP_FLOOR = -80.0
"""Smallest log-prob stored: float16 holds it exactly, and ``exp`` of it is ~1.8e-35."""

MAX_INT16_VOCAB = int(np.iinfo(np.int16).max) + 1
"""Top-k ids are at most int16, so a top-k archive supports vocabularies up to 32768 tokens."""

MAX_UINT8_VOCAB = 256
"""The compact form stores top-k ids as uint8 up to this many tokens (int16 above)."""

QUANTIZATIONS = (None, "uint8")
"""``None``: float16 log-probs (the default); ``"uint8"``: the compact form (:func:`quantize`)."""

TIE_BREAK = 1e-5
"""Nats a compact top-k column is lowered per rank when read, so tokens that share a quantization step keep the
teacher's order (its argmax, which best-path targets, guides and spike agreement read) at no visible cost."""

COMPACT_LOGP_RANGE = 8.0
"""Default ``L`` of the compact form: log-probs clipped to ``[-L, 0]`` in 255 steps of L/255 nats. 8 rather than 16:
demo CNN students (10 seeds) matched dense labels at 8 (-0.3% WER) and lost 2.1% at 16; the finer step matters,
tokens below e^-8 do not."""

META_FILE = "meta.yaml"
CUTS_FILE = "cuts.jsonl.gz"
ARRAYS_DIR = "arrays"
CHUNKS_DIR = "chunks"
PLAN_FILE = "plan.json.gz"
LOGP_FIELD = "kd_logp"
IDS_FIELD = "kd_ids"
LOGP_RANGE_FIELD = "kd_logp_range"
"""Cut custom field of a compact archive: its ``L``, so a cut's labels dequantize without the meta."""
_CHUNK_RE = re.compile(r"^chunk-(\d+)-(\d+)\.jsonl\.gz$")


class ArchiveError(KdasrError, RuntimeError):
    """An archive directory that cannot be read or written as asked."""


class ArchiveMismatchError(KdasrError, ValueError):
    """An archive that does not fit a student (cuts, frames, tokens or frame shift)."""


# --------------------------------------------------------------------------- meta


@dataclass
class ArchiveMeta:
    """What produced an archive; checked against the student before any training step.

    ``k=None`` means dense storage (the whole distribution), which is what a
    small vocabulary (characters, phones) should use: top-k saves little there
    and loses the tail. ``quantization="uint8"`` is the compact form, with
    ``logp_range`` its ``L`` (see :func:`quantize`).
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
    quantization: Optional[str] = None
    logp_range: Optional[float] = None

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
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"archive of teacher {self.teacher!r}: quantization must be one of {QUANTIZATIONS}, "
                             f"got {self.quantization!r}")
        if (self.quantization is None) != (self.logp_range is None):
            raise ValueError(f"archive of teacher {self.teacher!r}: logp_range goes with quantization uint8 only "
                             f"(got quantization {self.quantization!r}, logp_range {self.logp_range!r})")
        if self.logp_range is not None and not 0 < self.logp_range <= -LOGP_FLOOR:
            raise ValueError(f"archive of teacher {self.teacher!r}: logp_range must lie in (0, {-LOGP_FLOOR}], "
                             f"got {self.logp_range}")

    @property
    def storage(self) -> str:
        """``dense`` or ``top-K``, plus ``, uint8 in [-L, 0]`` for the compact form (what ``archive info`` prints)."""
        base = "dense" if self.dense else f"top-{self.k}"
        return base if self.quantization is None else f"{base}, {self.quantization} in [-{self.logp_range:g}, 0]"

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


def ids_dtype(vocab_size: int, quantization: Optional[str]) -> np.dtype:
    """Top-k id type: int16, or uint8 in the compact form when the vocabulary fits (<= 256 tokens)."""
    small = quantization is not None and vocab_size <= MAX_UINT8_VOCAB
    return np.dtype(np.uint8 if small else np.int16)


def payload_bytes_per_frame(vocab_size: int, k: Optional[int], quantization: Optional[str] = None) -> int:
    """Array bytes one output frame takes: ``2V`` dense, ``2(k+1) + 2k`` top-k (float16 + int16);
    compact (uint8): ``V`` dense, ``(k+1) + k`` top-k up to 256 tokens (``(k+1) + 2k`` above)."""
    value = 2 if quantization is None else 1
    if k is None:
        return value * vocab_size
    return value * (k + 1) + ids_dtype(vocab_size, quantization).itemsize * k


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


def quantize(logp: np.ndarray, logp_range: float) -> np.ndarray:
    """The compact form's codec: log-probs clipped to ``[-L, 0]``, linearly to uint8 (0 = log 1, 255 = -L).

    A fixed scale (recorded in ``meta.yaml`` and on every cut) rather than one
    per frame: every stored log-prob is then within ``L/510`` nats of the
    teacher's (L = 16: 0.031, i.e. each probability within 3.2%), whatever
    the frame's range; a per-frame scale would be finer on flat frames but
    coarser on the peaky ones CTC teachers mostly emit, where a spike's
    runner-ups sit 10-30 nats below it. What is clipped is below
    ``exp(-L)`` (1e-7 at L = 16), nothing a KL or CE target can feel.
    """
    x = np.clip(-np.asarray(logp, dtype=np.float64), 0.0, logp_range) * (255.0 / logp_range)
    return np.rint(x).astype(np.uint8)


def dequantize(q: np.ndarray, logp_range: float) -> np.ndarray:
    """Inverse of :func:`quantize` (to the nearest of its 256 levels), as float32 log-probs."""
    return (np.asarray(q, dtype=np.float32) * np.float32(-logp_range / 255.0)).astype(np.float32)


def encode_log_probs(
    log_probs: np.ndarray,
    k: Optional[int],
    cut_id: str = "?",
    quantization: Optional[str] = None,
    logp_range: Optional[float] = None,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Turn ``(T', V)`` log-probs into what an archive stores: ``(logp, ids)`` (``ids`` None when dense).

    The rows must be normalised log-probabilities (``log_softmax`` output): a
    row whose ``logsumexp`` is far from 0 almost always means logits were
    passed by mistake, and would make the remaining-mass column meaningless.
    ``quantization="uint8"`` gives the compact form: :func:`quantize` with
    ``logp_range`` and :func:`ids_dtype` ids.
    """
    if quantization is not None and (quantization not in QUANTIZATIONS or logp_range is None):
        raise ValueError(f"cut {cut_id}: quantization {quantization!r} needs to be uint8, with a logp_range")
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
    V = lp.shape[1]

    def stored(x: np.ndarray) -> np.ndarray:
        x = np.maximum(x, LOGP_FLOOR)
        return x.astype(np.float16) if quantization is None else quantize(x, logp_range)

    if k is None:
        return stored(lp), None
    if not 1 <= k < V:
        raise ValueError(f"cut {cut_id}: k={k} must lie in 1..{V - 1} for a vocabulary of {V}")
    # indices of the k largest per row, in decreasing order (ties: lowest id first, stable)
    order = np.argsort(-lp, axis=1, kind="stable")
    ids = order[:, :k]
    rest_idx = order[:, k:]
    top = np.take_along_axis(lp, ids, axis=1)
    rest = _logsumexp(np.take_along_axis(lp, rest_idx, axis=1), axis=1) if lp.shape[0] else np.zeros(0)
    logp = np.concatenate([top, rest[:, None]], axis=1)
    return stored(logp), ids.astype(ids_dtype(V, quantization))


def decode_probs(
    logp: np.ndarray, ids: Optional[np.ndarray], vocab_size: int, cut_id: str = "?", logp_range: Optional[float] = None
) -> np.ndarray:
    """Stored arrays back to a full ``(T', V)`` float32 probability matrix.

    Top-k: the k stored tokens get their stored probability; the remaining
    mass (last column) is spread uniformly over the other ``V - k`` tokens.
    A teacher's tail is not uniform, but the top-k of a trained CTC model hold
    nearly all of the mass, so the shape of the tail barely moves a KL or CE
    loss while keeping the distribution proper (no token gets probability 0,
    so the student is never pushed towards -inf on a token).
    Rows are renormalised to sum to 1, which removes the float16 rounding
    (or the uint8 steps: compact arrays are dequantized with ``logp_range``).
    """
    quantized = np.asarray(logp).dtype == np.uint8
    if quantized:
        if logp_range is None:
            raise ArchiveMismatchError(f"cut {cut_id}: compact (uint8) soft labels need their logp_range to be read")
        logp = dequantize(logp, logp_range)
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
        if quantized:  # top-k columns are stored best first: keep that order where two fell into one step
            logp = logp - np.arange(k + 1, dtype=np.float32) * TIE_BREAK
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


# --------------------------------------------------------------------------- layout


def chunk_manifests(archive_dir: Path) -> list[tuple[int, int, Path]]:
    """Finished chunk manifests as (job, n, path), in (job, n) order."""
    out = []
    d = archive_dir / CHUNKS_DIR
    if d.is_dir():
        for p in d.iterdir():
            m = _CHUNK_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(out)


def chunk_name(job: int, n: int) -> str:
    return f"chunk-{job}-{n:05d}"


def arrays_suffix(meta: ArchiveMeta) -> str:
    """File suffix of a chunk's arrays: ``.h5`` (float16, HDF5) or ``.bin`` (compact, raw bytes)."""
    return ".h5" if meta.quantization is None else ".bin"
