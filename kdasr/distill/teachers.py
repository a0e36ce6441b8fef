"""The teachers of a KD run: archived or run online, checked against the student, their labels per batch.

A teacher entry of ``kd.teachers`` names either a soft-label ``archive``
(labels looked up by cut id, ``orig_id`` for multistream copies, checked
frame by frame against the student's output lengths) or a ``checkpoint``
that runs in the training process (online KD): in eval mode, without
gradients (under the trainer's bf16 autocast on GPU), on exactly the
features the student sees after augmentation, so time warp, noise and speed
copies keep teacher and student frames aligned by construction. An online
teacher of another view (a broadband teacher of a narrowband student) names
that view's cuts (``cuts``); the batch then carries those features with the
same augmentation draws (:class:`kdasr.data.dataset.AsrDataset`). Under
``align_spikes`` every other teacher's labels are re-timed onto the first
teacher's spikes (:mod:`kdasr.distill.align`).
"""
from __future__ import annotations

import abc
import difflib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut

from kdasr.config import ConfigError
from kdasr.data.augment import frame_moving
from kdasr.data.dataset import source_id
from kdasr.distill.align import align_to_anchor
from kdasr.distill.archive import (
    ArchiveMeta,
    ArchiveMismatchError,
    archive_frames,
    check_loaded,
    cuts_spike_agreement,
    load_archive,
    load_probs,
)
from kdasr.models.checkpoint import experiment_name, load_checkpoint, model_from_checkpoint
from kdasr.models.common import model_inputs

#: the keys of a ``kd.teachers`` entry
TEACHER_KEYS = ("name", "archive", "checkpoint", "cuts", "weight")
#: the temperature of online teachers when neither ``kd.temperature`` nor an archive sets one
#: (that of ``kdasr soft-labels``)
DEFAULT_TEMPERATURE = 1.0
#: ``kd.teacher_input``: what online teachers read. ``clean`` (the default): the student's frames
#: (speed copy, time warp) without gain, noise, reverberation and masks, as in teacher-student
#: training on parallel clean/noisy data (Li et al., Interspeech 2014); ``augmented``: the student's
#: features exactly. On the demo (CNN teacher, masks on, 2 seeds) clean gave students of 31.4% test
#: WER, augmented 32.7%, the archive (clean labels) 31.7% (tools/bench_kd.py).
TEACHER_INPUTS = ("clean", "augmented")
#: the view key of a clean copy of the student's own features (an online teacher of its view)
STUDENT_VIEW = "<student>"
#: frame averaging of two archived teachers is warned about below this symmetric spike agreement,
#: measured on the first :data:`AGREEMENT_CUTS` common cut ids
SPIKE_AGREEMENT_WARN = 0.5
AGREEMENT_CUTS = 50

ViewInputs = Mapping[Optional[str], tuple[torch.Tensor, torch.Tensor]]
"""``(features, feature_lens)`` per view: None the student's own, else an online teacher's ``cuts`` path."""
Labels = Union[np.ndarray, torch.Tensor]
"""One cut's ``(T', V)`` probabilities: numpy from an archive, a tensor on the batch's device online."""


def check_teacher_entries(teachers: Sequence[Any]) -> None:
    """Each ``kd.teachers`` entry: a mapping with exactly one of ``archive``/``checkpoint``, known keys only."""
    for i, t in enumerate(teachers):
        where = f"kd.teachers[{i}]"
        if not isinstance(t, Mapping):
            raise ConfigError(f"{where} must be a mapping like {{name: vgg, archive: DIR}}, got {t!r}")
        for key in t:
            if key not in TEACHER_KEYS:
                close = difflib.get_close_matches(str(key), TEACHER_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(TEACHER_KEYS)})"
                raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        kinds = [k for k in ("archive", "checkpoint") if t.get(k)]
        if len(kinds) != 1:
            raise ConfigError(f"{where} must name exactly one of 'archive' (a soft-label archive) or "
                              f"'checkpoint' (a teacher run online), got {dict(t)!r}")
        if t.get("cuts") and not t.get("checkpoint"):
            raise ConfigError(f"{where}: 'cuts' (the teacher's view) is for online teachers; an archive is keyed by cut id")
        if "weight" in t and (isinstance(t["weight"], bool) or not isinstance(t["weight"], (int, float))):
            raise ConfigError(f"{where}.weight must be a number, got {t['weight']!r}")


@dataclass
class LabelBatch:
    """What one batch asks of the teachers: its cuts, the student's frames per cut, the references,
    and for online teachers the batch's inputs (row ``i`` is cut ``i``)."""

    cuts: list[Cut]
    frames: list[int]
    #: the batch's token ids, or None per cut when the caller has none
    refs: list[Optional[Sequence[int]]]
    device: Optional[torch.device]
    inputs: ViewInputs = field(default_factory=dict)
    #: online teachers' outputs of this batch, computed once per teacher
    cache: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def max_frames(self) -> int:
        return max(self.frames) if self.frames else 0


@dataclass
class Teacher(abc.ABC):
    """One teacher as the combine modes see it: a name, a weight, labels per cut of a batch."""

    name: str
    #: what messages name: the archive directory or the checkpoint
    source: str
    weight: float
    vocab_size: int
    frame_shift: float
    temperature: float
    lang_hash: Optional[str]

    @abc.abstractmethod
    def cut_labels(self, b: LabelBatch, i: int) -> Labels:
        """Cut ``i``'s ``(b.frames[i], V)`` probabilities at the teacher's temperature."""


@dataclass
class ArchiveTeacher(Teacher):
    """A teacher whose labels were dumped: ``{cut id: archive cut}``."""

    meta: Optional[ArchiveMeta] = None
    cuts: dict[str, Cut] = field(default_factory=dict)

    def cut_labels(self, b: LabelBatch, i: int) -> Labels:
        cut, frames = b.cuts[i], b.frames[i]
        key = source_id(cut)
        arch = self.cuts.get(key)
        if arch is None:
            raise ArchiveMismatchError(
                f"cut {cut.id} (archive id {key}) is not in the archive of teacher {self.name} ({self.source})"
            )
        have = archive_frames(arch)
        if have != frames:
            raise ArchiveMismatchError(
                f"cut {cut.id}: teacher {self.name} has {have} frames, the student {frames} "
                "(num_frames must be the student's out_lens = ceil(feature_lens / 4))"
            )
        return load_probs(arch, self.vocab_size)


@dataclass
class OnlineTeacher(Teacher):
    """A teacher network run on each batch; ``view``: its ``cuts`` path, None when it reads the student's features."""

    model: Optional[torch.nn.Module] = None
    view: Optional[str] = None

    def cut_labels(self, b: LabelBatch, i: int) -> Labels:
        probs = b.cache.get(self.name)
        if probs is None:
            probs = b.cache[self.name] = self._run(b)
        return probs[i, : b.frames[i]]

    def _run(self, b: LabelBatch) -> torch.Tensor:
        if self.view not in b.inputs:
            what = "the student's features" if self.view is None else f"the features of its view {self.view}"
            raise ValueError(f"online teacher {self.name} needs {what} in the batch (LabelBatch.inputs)")
        feats, lens = b.inputs[self.view]
        if feats.shape[0] != len(b.cuts):
            raise ValueError(f"online teacher {self.name}: {feats.shape[0]} feature rows for {len(b.cuts)} cuts")
        model = self.model.to(feats.device)
        extra = model_inputs(model, [r or [] for r in b.refs], feats.device)
        with torch.no_grad():
            logits, out_lens = model(feats, lens.to(feats.device), **extra)
            probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        for cut, have, want in zip(b.cuts, out_lens.tolist(), b.frames):
            if int(have) != want:
                raise ArchiveMismatchError(
                    f"cut {cut.id}: online teacher {self.name} gives {have} frames, the student {want} "
                    "(they must read the same feature frames)"
                )
        return probs if b.device is None else probs.to(b.device)


@dataclass(frozen=True)
class TeacherView:
    """Features an online teacher reads instead of the student's batch: a view of the training cuts
    (``cuts``: source id -> cut) augmented with the student's draws, or only its frame moves (``clean``)."""

    cuts: dict[str, Cut]
    clean: bool


def _student_features(cuts: Sequence[Cut]) -> tuple[int, int]:
    """``(num_features, sampling_rate)`` of the student's features (its first cut's)."""
    first = cuts[0]
    if not first.has_features:
        raise ArchiveMismatchError(f"cut {first.id} has no features: run `kdasr prepare fbank` first")
    return int(first.num_features), int(first.features.sampling_rate)


def _view_cuts(path: str, student_cuts: Sequence[Cut], where: str) -> dict[str, Cut]:
    """An online teacher's view: its cuts by id, every student cut there with as many feature frames."""
    try:
        by_id = {c.id: c for c in CutSet.from_file(path)}
    except Exception as e:
        raise ArchiveMismatchError(f"{where}: cannot read its cuts {path}: {e}") from e
    missing = [c.id for c in student_cuts if source_id(c) not in by_id]
    if missing:
        raise ArchiveMismatchError(f"{where}: {len(missing)} student cuts are not in {path}: {', '.join(missing[:5])}")
    for c in student_cuts:
        v = by_id[source_id(c)]
        if not v.has_features:
            raise ArchiveMismatchError(f"{where}: cut {v.id} in {path} has no features (run `kdasr prepare fbank`)")
        if v.num_frames != c.num_frames:
            raise ArchiveMismatchError(
                f"{where}: cut {c.id} has {v.num_frames} feature frames in {path}, the student's {c.num_frames}"
            )
    return by_id


def load_online_teacher(
    i: int, t: Mapping[str, Any], student_cuts: Sequence[Cut], lang_hash: Optional[str],
    vocab_size: Optional[int], frame_shift: float, temperature: float, clean: bool = False,
) -> tuple[OnlineTeacher, Optional[TeacherView]]:
    """An online teacher from its checkpoint, refused before the first step (one line naming the file and
    the mismatch) when its token set, frame rate, feature dimension or sampling rate differ from what it
    will read; with ``cuts``, also its view (:func:`_view_cuts`), and with ``clean`` a clean copy of
    the student's own view when it reads that."""
    path = str(t["checkpoint"])
    where = f"kd.teachers[{i}] (checkpoint {path})"
    try:
        ckpt = load_checkpoint(path)
    except (FileNotFoundError, RuntimeError) as e:
        raise ArchiveMismatchError(f"kd.teachers[{i}]: {e}") from e
    name = str(t.get("name") or experiment_name(path))
    view = str(t["cuts"]) if t.get("cuts") else None
    view_cuts = _view_cuts(view, student_cuts, where) if view else None
    feats, rate = _student_features(list(view_cuts.values()) if view_cuts else student_cuts)
    problems = []
    if lang_hash is not None and ckpt.get("lang_hash") != lang_hash:
        problems.append(f"another token set (lang hash {ckpt.get('lang_hash')}, the student's {lang_hash})")
    if vocab_size is not None and ckpt.get("vocab_size") != vocab_size:
        problems.append(f"{ckpt.get('vocab_size')} output tokens, the student {vocab_size}")
    if not math.isclose(float(ckpt.get("frame_shift", frame_shift)), frame_shift):
        problems.append(f"output frames of {ckpt.get('frame_shift')} s, the student's {frame_shift} s")
    if ckpt.get("num_features") != feats:
        problems.append(f"{ckpt.get('num_features')} input features, the {'view' if view else 'student'}'s {feats}")
    if ckpt.get("sampling_rate") not in (None, rate):
        problems.append(f"features at {ckpt.get('sampling_rate')} Hz, the {'view' if view else 'student'}'s at {rate} Hz"
                        + ("" if view else " (give kd.teachers[].cuts: the teacher's view of the same cuts)"))
    if problems:
        raise ArchiveMismatchError(f"{where} does not fit: it was trained with " + "; ".join(problems))
    model = model_from_checkpoint(ckpt).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if view_cuts is None and clean:
        view, view_cuts = STUDENT_VIEW, {source_id(c): c for c in student_cuts}
    teacher = OnlineTeacher(name, path, float(t.get("weight", 1.0)), int(ckpt["vocab_size"]),
                            float(ckpt.get("frame_shift", frame_shift)), temperature, ckpt.get("lang_hash"),
                            model=model, view=view)
    return teacher, None if view_cuts is None else TeacherView(view_cuts, clean)


def load_archive_teacher(
    t: Mapping[str, Any], student_cuts: Sequence[Cut], lang_hash: Optional[str],
    vocab_size: Optional[int], frame_shift: float,
) -> ArchiveTeacher:
    """An archive, checked against the student (every cut, frames, token set, frame shift)."""
    meta, cuts = load_archive(t["archive"])
    name = str(t.get("name", meta.teacher))
    by_id = {cut.id: cut for cut in cuts}
    problems = check_loaded(
        meta, {k: archive_frames(v) for k, v in by_id.items()}, student_cuts, lang_hash,
        frame_shift, vocab_size, where=f"teacher {name} ({t['archive']})",
    )
    if problems:
        raise ArchiveMismatchError(
            f"soft-label archive {t['archive']} does not fit the student:\n  - " + "\n  - ".join(problems)
        )
    return ArchiveTeacher(name, str(t["archive"]), float(t.get("weight", 1.0)), meta.vocab_size, meta.frame_shift,
                          float(meta.temperature), meta.lang_hash, meta=meta, cuts=by_id)


def load_teachers(
    teachers_cfg: Sequence[Mapping[str, Any]],
    student_cuts: Sequence[Cut],
    lang_hash: Optional[str],
    vocab_size: Optional[int],
    frame_shift: float,
    temperature: Optional[float] = None,
    teacher_input: str = "augmented",
) -> tuple[list[Teacher], dict[str, TeacherView]]:
    """Load every ``kd.teachers`` entry and check it against the student and the other teachers
    (vocabulary, frame shift, temperature: labels at different temperatures cannot share one T^2).

    Online teachers run at ``temperature`` (``kd.temperature``), else at the archives', else at
    :data:`DEFAULT_TEMPERATURE`, on ``teacher_input`` (:data:`TEACHER_INPUTS`). Returns the teachers
    and the views online teachers read (``cuts`` path, or :data:`STUDENT_VIEW` -> :class:`TeacherView`).
    """
    check_teacher_entries(teachers_cfg)
    student_cuts = list(student_cuts)
    teachers: list[Teacher] = [
        load_archive_teacher(t, student_cuts, lang_hash, vocab_size, frame_shift)
        for t in teachers_cfg if t.get("archive")
    ]
    online_t = temperature if temperature is not None else (
        teachers[0].temperature if teachers else DEFAULT_TEMPERATURE)
    views: dict[str, TeacherView] = {}
    by_entry = iter(teachers)
    ordered: list[Teacher] = []
    for i, t in enumerate(teachers_cfg):  # keep the config's order: the first teacher anchors align_spikes
        if t.get("archive"):
            ordered.append(next(by_entry))
            continue
        teacher, view = load_online_teacher(i, t, student_cuts, lang_hash, vocab_size, frame_shift, online_t,
                                            teacher_input == "clean")
        if view is not None:
            views[str(teacher.view)] = view
        ordered.append(teacher)
    names = [t.name for t in ordered]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"kd.teachers: two teachers are named {dup[0]!r}")
    first = ordered[0]
    for t in ordered[1:]:
        for key in ("vocab_size", "frame_shift", "temperature", "lang_hash"):
            if getattr(t, key) != getattr(first, key):
                raise ArchiveMismatchError(
                    f"teachers disagree on {key}: {first.name} has {getattr(first, key)!r}, "
                    f"{t.name} has {getattr(t, key)!r} ({t.source})"
                )
    return ordered, views


def warn_if_spikes_disagree(teachers: Sequence[Teacher]) -> None:
    """Warn when archived teachers whose labels are averaged frame by frame spike on different frames.

    Why: CTC models trained apart put a token's spike on different frames
    (speechocean762: two seeds of one CNN share 1% of their spikes), so their
    frame average holds two half-height spikes per token; a student trained on
    it stayed near the blank plateau where one teacher's labels took it out.
    ``kd.align_spikes`` re-times the other teachers onto the first one.
    Online teachers are not measured (that would mean running them here).
    """
    archived = [t for t in teachers if isinstance(t, ArchiveTeacher)]
    for other in archived[1:]:
        anchor = archived[0]
        ids = sorted(anchor.cuts.keys() & other.cuts.keys())[:AGREEMENT_CUTS]
        if not ids:
            continue
        agree = cuts_spike_agreement(anchor.cuts, other.cuts, ids, anchor.vocab_size,
                                     where=(anchor.source, other.source))["symmetric"]
        if agree < SPIKE_AGREEMENT_WARN:
            logging.warning(
                "teachers %s and %s share %.1f%% of their spikes (%d cuts): averaging them frame by frame "
                "smears every token over two spikes; set kd.align_spikes=true (kdasr archive agreement "
                "--aligned shows what re-timing recovers)", anchor.name, other.name, 100 * agree, len(ids))


def _numpy(p: Labels) -> np.ndarray:
    return p.detach().float().cpu().numpy() if isinstance(p, torch.Tensor) else p


class TeacherLabels:
    """Reads the teachers' labels of a batch: ``(B, T', V)`` tensors, zero-padded past each cut's frames."""

    def __init__(self, teachers: Sequence[Teacher], blank_id: int, align_spikes: bool) -> None:
        self.teachers = list(teachers)
        self.names = [t.name for t in self.teachers]
        self.vocab_size = self.teachers[0].vocab_size
        self.temperature = float(self.teachers[0].temperature)
        self.blank_id = blank_id
        self.align_spikes = align_spikes

    def labels(self, teacher: Teacher, b: LabelBatch, i: int, anchor: Optional[Labels] = None) -> Labels:
        """A teacher's labels for cut ``i``; under ``align_spikes`` re-timed onto the first teacher's spikes
        (``anchor``: the first teacher's labels of the cut when the caller has them already)."""
        probs = teacher.cut_labels(b, i)
        if not self.align_spikes or teacher is self.teachers[0]:
            return probs
        if anchor is None:
            anchor = self.teachers[0].cut_labels(b, i)
        return align_to_anchor(_numpy(anchor), _numpy(probs), b.refs[i], self.blank_id)

    def chosen(self, teachers: Sequence[Teacher], b: LabelBatch) -> torch.Tensor:
        """The labels of ``teachers[i]`` for cut ``i``: one teacher per cut."""
        return self.stack([self.labels(t, b, i) for i, t in enumerate(teachers)], b)

    def every_teacher(self, b: LabelBatch) -> list[torch.Tensor]:
        """Each teacher's labels of the batch, ``(B, T', V)`` per teacher; the first teacher's are read once."""
        first = [self.teachers[0].cut_labels(b, i) for i in range(len(b.cuts))]
        per_teacher = [first] + [
            [self.labels(t, b, i, a) for i, a in enumerate(first)] for t in self.teachers[1:]
        ]
        return [self.stack(p, b) for p in per_teacher]

    def stack(self, per_cut: list[Labels], b: LabelBatch) -> torch.Tensor:
        out = torch.zeros(len(per_cut), b.max_frames, self.vocab_size, dtype=torch.float32, device=b.device)
        for i, p in enumerate(per_cut):
            out[i, : p.shape[0]] = torch.as_tensor(p, device=out.device)
        return out


def label_batch(
    cuts: Iterable[Cut],
    num_frames: Any,
    ref_targets: Optional[Sequence[Sequence[int]]],
    device: Optional[Any],
    inputs: Optional[ViewInputs] = None,
) -> LabelBatch:
    """A :class:`LabelBatch` from the trainer's pieces (``num_frames``: a tensor or ints, one per cut)."""
    cuts = list(cuts)
    nf = [int(x) for x in (num_frames.tolist() if isinstance(num_frames, torch.Tensor) else num_frames)]
    if len(nf) != len(cuts):
        raise ValueError(f"{len(nf)} frame counts for {len(cuts)} cuts")
    refs = list(ref_targets) if ref_targets is not None else [None] * len(cuts)
    return LabelBatch(cuts, nf, refs, torch.device(device) if device is not None else None, dict(inputs or {}))


def check_temperature(wanted: Optional[float], have: float) -> None:
    """``kd.temperature`` must equal the archives' (set: a check; None: take it from the archives)."""
    if wanted is not None and not math.isclose(float(wanted), have):
        raise ConfigError(
            f"kd.temperature is {wanted} but the archives were dumped at {have}: "
            "dump the soft labels again at the wanted temperature (or drop kd.temperature)"
        )


def check_augmentation_compatible(cfg: Mapping[str, Any]) -> None:
    """Refuse augmentations that move frames when KD reads labels from an archive.

    An archive holds the teacher's labels for the unperturbed frames of
    each cut; an augmentation that moves frames (SpecAugment's time warp)
    would have them describe other frames than the student sees, silently
    (icefall's distillation recipes had to turn time warp off for this
    reason). Which augmentations move frames is what they declare
    (:func:`kdasr.data.augment.frame_moving`); precomputed speed copies have
    their own ids and archived labels, so they are fine, and online teachers
    read the student's own (warped) features, so they allow everything.
    Call it with the resolved config (defaults merged). Raises :class:`ConfigError`.
    """
    kd = cfg.get("kd")
    if not kd or not kd.get("teachers"):
        return
    archived = [str(t.get("name") or t.get("archive")) for t in kd["teachers"]
                if isinstance(t, Mapping) and t.get("archive")]
    moving = frame_moving((cfg.get("data") or {}).get("augment"))
    if archived and moving:
        raise ConfigError(
            f"knowledge distillation from the soft-label archive of {', '.join(archived)} needs the student to see "
            "the teacher's frames, but " + "; ".join(moving) + " moves them: run the teacher online instead "
            "(kd.teachers: [{name: ..., checkpoint: exp/<teacher>/best.pt}]: it reads the warped features), or "
            "turn it off (set it to 0); speed perturbation also works as precomputed copies (`kdasr prepare speed`)"
        )
