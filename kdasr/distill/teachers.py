"""The teachers of a KD run: their archives loaded and checked, and their labels read per cut.

Labels are looked up by cut id (``orig_id`` for multistream copies) and
checked frame by frame against the student's output lengths; nothing depends
on batch order or position. Under ``align_spikes`` every other teacher's
labels are re-timed onto the first teacher's spikes (:mod:`kdasr.distill.align`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from lhotse.cut import Cut

from kdasr.config import ConfigError
from kdasr.data.augment import frame_moving
from kdasr.distill.align import align_to_anchor
from kdasr.distill.archive import (
    ArchiveMeta,
    ArchiveMismatchError,
    archive_frames,
    check_loaded,
    load_archive,
    load_probs,
)
from kdasr.utils.io import Pathlike


@dataclass
class Teacher:
    """One teacher: its config entry, archive meta and ``{cut id: archive cut}``."""

    name: str
    archive: Pathlike
    weight: float
    meta: ArchiveMeta
    cuts: dict[str, Cut]


def load_teachers(
    teachers_cfg: Sequence[Mapping[str, Any]],
    student_cuts: Sequence[Cut],
    lang_hash: Optional[str],
    vocab_size: Optional[int],
    frame_shift: float,
) -> list[Teacher]:
    """Load every ``kd.teachers`` archive and check it against the student (cuts, frames, token set)
    and the other teachers (vocabulary, frame shift, temperature: labels at different temperatures
    cannot share one T^2)."""
    teachers: list[Teacher] = []
    names: set[str] = set()
    for t in teachers_cfg:
        meta, cuts = load_archive(t["archive"])
        name = str(t.get("name", meta.teacher))
        if name in names:
            raise ConfigError(f"kd.teachers: two teachers are named {name!r}")
        names.add(name)
        by_id = {cut.id: cut for cut in cuts}
        problems = check_loaded(
            meta, {k: archive_frames(v) for k, v in by_id.items()}, student_cuts, lang_hash,
            frame_shift, vocab_size, where=f"teacher {name} ({t['archive']})",
        )
        if problems:
            raise ArchiveMismatchError(
                f"soft-label archive {t['archive']} does not fit the student:\n  - " + "\n  - ".join(problems)
            )
        teachers.append(Teacher(name, t["archive"], float(t.get("weight", 1.0)), meta, by_id))
    first = teachers[0].meta
    for t in teachers[1:]:
        for key in ("vocab_size", "frame_shift", "temperature", "lang_hash"):
            if getattr(t.meta, key) != getattr(first, key):
                raise ArchiveMismatchError(
                    f"teachers disagree on {key}: {teachers[0].name} has {getattr(first, key)!r}, "
                    f"{t.name} has {getattr(t.meta, key)!r} ({t.archive})"
                )
    return teachers


def _cut_key(cut: Cut) -> str:
    return str((cut.custom or {}).get("orig_id", cut.id))


@dataclass
class LabelBatch:
    """What one batch asks of the teachers: its cuts, the student's frames per cut, the references."""

    cuts: list[Cut]
    frames: list[int]
    #: the batch's token ids, or None per cut when the caller has none
    refs: list[Optional[Sequence[int]]]
    device: Optional[torch.device]

    @property
    def max_frames(self) -> int:
        return max(self.frames) if self.frames else 0


class TeacherLabels:
    """Reads the teachers' labels of a batch: ``(B, T', V)`` tensors, zero-padded past each cut's frames."""

    def __init__(self, teachers: Sequence[Teacher], blank_id: int, align_spikes: bool) -> None:
        self.teachers = list(teachers)
        self.names = [t.name for t in self.teachers]
        self.vocab_size = self.teachers[0].meta.vocab_size
        self.temperature = float(self.teachers[0].meta.temperature)
        self.blank_id = blank_id
        self.align_spikes = align_spikes

    def probs(self, teacher: Teacher, cut: Cut, frames: int) -> np.ndarray:
        key = _cut_key(cut)
        arch = teacher.cuts.get(key)
        if arch is None:
            raise ArchiveMismatchError(
                f"cut {cut.id} (archive id {key}) is not in the archive of teacher {teacher.name} ({teacher.archive})"
            )
        have = archive_frames(arch)
        if have != frames:
            raise ArchiveMismatchError(
                f"cut {cut.id}: teacher {teacher.name} has {have} frames, the student {frames} "
                "(num_frames must be the student's out_lens = ceil(feature_lens / 4))"
            )
        return load_probs(arch, self.vocab_size)

    def labels(
        self, teacher: Teacher, cut: Cut, frames: int, ref: Optional[Sequence[int]],
        anchor: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """A teacher's labels for a cut; under ``align_spikes`` re-timed onto the first teacher's spikes
        (``anchor``: the first teacher's labels of the cut when the caller has them already)."""
        probs = self.probs(teacher, cut, frames)
        if not self.align_spikes or teacher is self.teachers[0]:
            return probs
        if anchor is None:
            anchor = self.probs(self.teachers[0], cut, frames)
        return align_to_anchor(anchor, probs, ref, self.blank_id)

    def chosen(self, teachers: Sequence[Teacher], b: LabelBatch) -> torch.Tensor:
        """The labels of ``teachers[i]`` for cut ``i``: one teacher per cut."""
        return self.stack(
            [self.labels(t, c, n, r) for t, c, n, r in zip(teachers, b.cuts, b.frames, b.refs)], b
        )

    def every_teacher(self, b: LabelBatch) -> list[torch.Tensor]:
        """Each teacher's labels of the batch, ``(B, T', V)`` per teacher; the first teacher's are read once."""
        first = [self.probs(self.teachers[0], c, n) for c, n in zip(b.cuts, b.frames)]
        per_teacher = [first] + [
            [self.labels(t, c, n, r, a) for c, n, r, a in zip(b.cuts, b.frames, b.refs, first)]
            for t in self.teachers[1:]
        ]
        return [self.stack(p, b) for p in per_teacher]

    def stack(self, per_cut: list[np.ndarray], b: LabelBatch) -> torch.Tensor:
        out = torch.zeros(len(per_cut), b.max_frames, self.vocab_size, dtype=torch.float32)
        for i, p in enumerate(per_cut):
            out[i, : p.shape[0]] = torch.from_numpy(p)
        return out if b.device is None else out.to(b.device)


def label_batch(
    cuts: Iterable[Cut],
    num_frames: Any,
    ref_targets: Optional[Sequence[Sequence[int]]],
    device: Optional[Any],
) -> LabelBatch:
    """A :class:`LabelBatch` from the trainer's pieces (``num_frames``: a tensor or ints, one per cut)."""
    cuts = list(cuts)
    nf = [int(x) for x in (num_frames.tolist() if isinstance(num_frames, torch.Tensor) else num_frames)]
    if len(nf) != len(cuts):
        raise ValueError(f"{len(nf)} frame counts for {len(cuts)} cuts")
    refs = list(ref_targets) if ref_targets is not None else [None] * len(cuts)
    return LabelBatch(cuts, nf, refs, torch.device(device) if device is not None else None)


def check_temperature(wanted: Optional[float], have: float) -> None:
    """``kd.temperature`` must equal the archives' (set: a check; None: take it from the archives)."""
    if wanted is not None and not math.isclose(float(wanted), have):
        raise ConfigError(
            f"kd.temperature is {wanted} but the archives were dumped at {have}: "
            "dump the soft labels again at the wanted temperature (or drop kd.temperature)"
        )


def check_augmentation_compatible(cfg: Mapping[str, Any]) -> None:
    """Refuse augmentations that move frames when KD reads labels from an archive.

    The archive holds the teacher's labels for the unperturbed frames of
    each cut; an augmentation that moves frames (SpecAugment's time warp)
    would have them describe other frames than the student sees, silently
    (icefall's distillation recipes had to turn time warp off for this
    reason). Which augmentations move frames is what they declare
    (:func:`kdasr.data.augment.frame_moving`); precomputed speed copies have
    their own ids and archived labels, so they are fine. Call it with the
    resolved config (defaults merged). Raises :class:`ConfigError`.
    """
    kd = cfg.get("kd")
    if not kd or not kd.get("teachers"):
        return
    moving = frame_moving((cfg.get("data") or {}).get("augment"))
    if moving:
        raise ConfigError(
            "knowledge distillation from a soft-label archive needs the student to see the teacher's frames, "
            "but " + "; ".join(moving) + " moves them: turn it off (set it to 0); speed perturbation works "
            "as precomputed copies (`kdasr prepare speed`), which the teacher labels under their own ids"
        )
