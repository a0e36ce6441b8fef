"""Soft-label archives: a teacher's per-frame distributions, stored as lhotse custom arrays keyed by cut id.

One concept, a module per part (as lhotse splits ``cut/``):

- :mod:`~kdasr.distill.archive.format`: layout, ``meta.yaml`` (:class:`ArchiveMeta`) and the array codec;
- :mod:`~kdasr.distill.archive.writer`: :class:`SoftLabelWriter` (chunks) and :func:`merge_jobs`;
- :mod:`~kdasr.distill.archive.reader`: :func:`load_archive`, :func:`load_probs`, :func:`soft_targets`;
- :mod:`~kdasr.distill.archive.dump`: teacher inference into an archive (``kdasr soft-labels``);
- :mod:`~kdasr.distill.archive.inspection`: info, spike agreement, and the checks against a student.

Why keyed by cut id: SpeechBrain's KD recipe keyed soft labels by batch
counter, so any change of data order silently paired the wrong labels with
the wrong utterance. Here a label is found through its cut's id only, and the
frame count of every cut is checked against the student before training.

The names below are the archive's public interface; import them from here.
"""
from __future__ import annotations

from kdasr.distill.archive.dump import dump_from_checkpoint, dump_soft_labels
from kdasr.distill.archive.format import (
    COMPACT_LOGP_RANGE,
    LOGP_FLOOR,
    ArchiveError,
    ArchiveMeta,
    ArchiveMismatchError,
    decode_probs,
    default_k,
    dequantize,
    encode_log_probs,
    payload_bytes_per_frame,
    quantize,
)
from kdasr.distill.archive.inspection import (
    archive_info,
    archive_spike_agreement,
    check_archive,
    check_loaded,
    cuts_spike_agreement,
    ensure_compatible,
)
from kdasr.distill.archive.reader import archive_frames, load_archive, load_probs, soft_targets
from kdasr.distill.archive.writer import SoftLabelWriter, job_split, merge_jobs

__all__ = [
    "COMPACT_LOGP_RANGE",
    "LOGP_FLOOR",
    "ArchiveError",
    "ArchiveMeta",
    "ArchiveMismatchError",
    "SoftLabelWriter",
    "archive_frames",
    "archive_info",
    "archive_spike_agreement",
    "check_archive",
    "check_loaded",
    "cuts_spike_agreement",
    "decode_probs",
    "default_k",
    "dequantize",
    "dump_from_checkpoint",
    "dump_soft_labels",
    "encode_log_probs",
    "ensure_compatible",
    "job_split",
    "load_archive",
    "load_probs",
    "merge_jobs",
    "payload_bytes_per_frame",
    "quantize",
    "soft_targets",
]
