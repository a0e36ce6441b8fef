"""Reading a finalized soft-label archive: its cuts, and each cut's labels as full distributions.

Read labels with :func:`soft_targets` / :func:`load_probs` (or the field's
own ``cut.kd_logp.load()``), not ``cut.load_kd_logp()``: lhotse trims a
temporal array loaded through the cut to ``round(duration / 0.04)`` frames,
which for e.g. a 0.73 s cut is 18 while the model (and the archive) has
``ceil(73 / 4) = 19``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
from lhotse import CutSet
from lhotse.array import Array, TemporalArray
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from kdasr.distill.archive.format import (
    CUTS_FILE,
    IDS_FIELD,
    LOGP_FIELD,
    LOGP_RANGE_FIELD,
    META_FILE,
    ArchiveError,
    ArchiveMeta,
    ArchiveMismatchError,
    chunk_manifests,
    decode_probs,
)
from kdasr.utils.io import Pathlike


def load_archive(archive_dir: Pathlike) -> tuple[ArchiveMeta, CutSet]:
    """``(meta, cuts)`` of a finalized archive, with storage paths resolved against ``archive_dir``."""
    archive_dir = Path(archive_dir)
    meta = ArchiveMeta.from_yaml(archive_dir / META_FILE)
    path = archive_dir / CUTS_FILE
    if not path.is_file():
        hint = " (chunks exist: run merge_jobs / the merge step after all jobs)" if chunk_manifests(archive_dir) else ""
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
    return decode_probs(logp, ids, vocab_size, cut.id, custom.get(LOGP_RANGE_FIELD))


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


def _relocate(cut: Cut, prefix: Path) -> Cut:
    """A copy of ``cut`` whose kd arrays' storage paths are prefixed by ``prefix``."""
    custom = dict(cut.custom or {})
    for name in (LOGP_FIELD, IDS_FIELD):
        v = custom.get(name)
        if isinstance(v, (Array, TemporalArray)):
            custom[name] = v.with_path_prefix(prefix)
    return fastcopy(cut, custom=custom)
