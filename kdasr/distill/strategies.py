"""Targets from one or several teachers' soft-label archives, and the KD objective the trainer runs.

Multi-teacher strategies (``kd.combine``):

- ``single``: one teacher.
- ``switch`` (Fukuda et al., Interspeech 2017): one teacher per minibatch,
  ``round-robin`` or ``random`` (seeded); the choice is a pure function of
  (mode, seed, step), so a resumed run picks the same teachers.
- ``multistream`` (Fukuda et al. 2017): each teacher's labels become a
  separate copy of the utterance in the epoch (:func:`multistream_cuts`).
- ``average`` / ``weighted`` (Hinton et al. 2015): the (weighted)
  arithmetic mean of the teachers' distributions; with ``seq`` the mean is
  taken over their transcripts instead (:func:`mix_nbest`), which needs no
  frame alignment between the teachers. ``align_spikes`` instead moves
  every other teacher's frames onto the first teacher's spike timing
  (:mod:`kdasr.distill.align`) before any combination.
- ``best``: per utterance, the teacher whose labels give the lowest CTC loss
  on the reference transcript.

KD losses (``kd.strategy``): ``frame-kl``, ``seq`` (sequence-level KD on the
teacher's n-best) and ``guided`` (guided CTC), see :mod:`kdasr.distill.losses`.

Labels are looked up by cut id (``orig_id`` for multistream copies) and
checked frame by frame against the student's output lengths; nothing depends
on batch order or position.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from lhotse import CutSet
from lhotse.cut import Cut

from kdasr.config import ConfigError
from kdasr.distill.align import align_to_anchor
from kdasr.distill.archive import (
    ArchiveMeta,
    ArchiveMismatchError,
    archive_frames,
    archive_key,
    check_loaded,
    load_archive,
    load_probs,
)
from kdasr.ctc import REDUCTIONS, ctc_loss_hard
from kdasr.distill.losses import (
    NBestList,
    frame_kl,
    guided_ctc_loss,
    kd_loss_total,
    mix_nbest,
    seq_kd_loss,
    seq_kd_targets,
)
from kdasr.models.common import FRAME_SHIFT
from kdasr.utils.io import Pathlike

STRATEGIES = ("frame-kl", "seq", "guided")
COMBINES = ("single", "switch", "multistream", "average", "weighted", "best")
SWITCH_MODES = ("round-robin", "random")
TEACHER_SEP = "#"
"""Separator of multistream copy ids: ``<orig_id>#<teacher>``."""

KD_DEFAULTS: dict = {
    "strategy": "frame-kl",
    "teachers": [],
    "combine": None,  # single for one teacher; must be given for several
    "switch_mode": "round-robin",
    "seed": 0,
    "temperature": None,  # None: take it from the archives (all must agree)
    "lambda": 0.5,
    "skip_blank_frames": False,
    "blank_threshold": 0.0,
    "nbest": 1,
    "beam": 8,
    "guide_weight": 1.0,
    "reduction": "utterance",
    "blank_id": 0,
    "align_spikes": False,  # re-time every other teacher's labels onto the first teacher's spikes
}


# --------------------------------------------------------------------------- switch


class TeacherSwitcher:
    """Which teacher labels minibatch ``step`` (the ``switch`` strategy).

    :meth:`choose` is a pure function of (mode, seed, step): round-robin is
    ``step % n``; random draws from a generator seeded by ``(seed, step)``.
    Resuming therefore needs no RNG state, and skipping or replaying batches
    cannot shift the schedule. :meth:`next` is the same with an internal
    step counter, for callers that do not count steps; the counter and the
    per-teacher counts are what :meth:`state_dict` saves.
    """

    def __init__(self, num_teachers: int, mode: str = "round-robin", seed: int = 0) -> None:
        if num_teachers < 1:
            raise ValueError(f"num_teachers must be >= 1, got {num_teachers}")
        if mode not in SWITCH_MODES:
            raise ValueError(f"switch mode must be one of {SWITCH_MODES}, got {mode!r}")
        self.num_teachers = num_teachers
        self.mode = mode
        self.seed = int(seed)
        self.step = 0
        self.counts = [0] * num_teachers

    def choose(self, step: int) -> int:
        if self.mode == "round-robin":
            return int(step) % self.num_teachers
        return int(np.random.default_rng([self.seed, int(step)]).integers(self.num_teachers))

    def next(self) -> int:
        t = self.choose(self.step)
        self.step += 1
        self.counts[t] += 1
        return t

    def note(self, teacher: int) -> None:
        """Count a choice made through :meth:`choose` (for the statistics only)."""
        self.counts[teacher] += 1

    def state_dict(self) -> dict:
        return {"num_teachers": self.num_teachers, "mode": self.mode, "seed": self.seed,
                "step": self.step, "counts": list(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore; refuses a state saved with another schedule (the resumed run would silently differ)."""
        for key in ("num_teachers", "mode", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"teacher switcher was saved with {key}={state[key]!r} but is configured with "
                    f"{getattr(self, key)!r}: resuming would change which teacher labels which batch"
                )
        self.step = int(state["step"])
        self.counts = [int(c) for c in state["counts"]]


# --------------------------------------------------------------------------- multistream


def multistream_cuts(cuts: Iterable[Cut], teacher_names: Sequence[str]) -> CutSet:
    """One copy of every cut per teacher: id ``<orig_id>#<teacher>``, custom ``kd_teacher`` and ``orig_id``.

    The copies share features and supervisions with the original; the
    archive lookup uses ``orig_id``, so one archive per teacher keyed by the
    original ids serves every copy. An epoch over the result sees each
    utterance once per teacher.
    """
    names = list(teacher_names)
    if not names:
        raise ValueError("multistream needs at least one teacher")
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    bad = [n for n in names if not n or TEACHER_SEP in n]
    if bad:
        raise ValueError(f"teacher names must be non-empty and free of {TEACHER_SEP!r}: {bad}")
    out = []
    for c in cuts:
        orig = str((c.custom or {}).get("orig_id", c.id))
        for n in names:
            copy = c.with_custom("kd_teacher", n).with_custom("orig_id", orig)
            copy.id = f"{orig}{TEACHER_SEP}{n}"
            out.append(copy)
    return CutSet.from_cuts(out)


# --------------------------------------------------------------------------- combining


def combine_targets(probs: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """(Weighted) arithmetic mean of teacher distributions ``(B, T, V)``; weights are normalised to sum 1.

    The arithmetic mean (not the geometric one) is the ensemble's predictive
    distribution (Hinton et al. 2015) and keeps every token any teacher
    considers possible.
    """
    if not probs:
        raise ValueError("no teacher distributions to combine")
    shape = probs[0].shape
    for i, p in enumerate(probs):
        if p.shape != shape:
            raise ValueError(f"teacher {i} gives shape {tuple(p.shape)}, teacher 0 {tuple(shape)}")
    if weights is None:
        w = [1.0 / len(probs)] * len(probs)
    else:
        if len(weights) != len(probs):
            raise ValueError(f"{len(weights)} weights for {len(probs)} teachers")
        if any(x < 0 for x in weights) or sum(weights) <= 0:
            raise ValueError(f"teacher weights must be >= 0 with a positive sum, got {list(weights)}")
        s = float(sum(weights))
        w = [float(x) / s for x in weights]
    out = probs[0].float() * w[0]
    for p, wi in zip(probs[1:], w[1:]):
        out = out + p.float() * wi
    return out


def best_teacher_targets(
    teacher_logprobs: Sequence[torch.Tensor],
    lens: torch.Tensor,
    targets: Sequence[Sequence[int]],
    blank_id: int = 0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per utterance, the distribution of the teacher with the lowest CTC loss on the reference.

    Returns ``(probs (B, T, V), chosen (B,))``; ``chosen`` is -1 where no
    teacher could be ranked (no transcript, or every teacher's CTC infinite)
    and the average of the teachers is used there. Archives store
    distributions at temperature T, so ranking sharpens them back with
    ``log_softmax(T * logp)`` (exact for dense labels, close for top-k) so
    the ranking is that of the teachers themselves. Ties go to the lower
    teacher index.
    """
    if not teacher_logprobs:
        raise ValueError("no teachers to choose from")
    B = teacher_logprobs[0].shape[0]
    if len(targets) != B:
        raise ValueError(f"{len(targets)} target lists for a batch of {B}")
    lens = lens.long().to(teacher_logprobs[0].device)
    losses = torch.full((len(teacher_logprobs), B), math.inf)
    keep = [i for i, t in enumerate(targets) if len(t) > 0]
    if keep:
        idx = torch.tensor(keep, dtype=torch.long, device=lens.device)
        flat = torch.tensor([t for i in keep for t in targets[i]], dtype=torch.long)
        tlens = torch.tensor([len(targets[i]) for i in keep], dtype=torch.long)
        for j, lp in enumerate(teacher_logprobs):
            ranked = torch.log_softmax(lp.float().index_select(0, idx) * temperature, dim=-1).transpose(0, 1)
            per = F.ctc_loss(ranked.cpu(), flat, lens.index_select(0, idx).cpu(), tlens, blank=blank_id,
                             reduction="none", zero_infinity=False)
            losses[j, keep] = per.float()
    best_loss, chosen = losses.min(dim=0)
    chosen = torch.where(torch.isfinite(best_loss), chosen, torch.full_like(chosen, -1))
    probs = torch.stack([lp.float().exp() for lp in teacher_logprobs])  # (N, B, T, V)
    out = probs.mean(dim=0)
    sel = (chosen >= 0).nonzero().flatten().tolist()
    for b in sel:
        out[b] = probs[int(chosen[b]), b]
    return out, chosen


# --------------------------------------------------------------------------- augmentation


def _walk(node: Any, path: str = "") -> Iterable[tuple[str, str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            p = f"{path}.{k}" if path else str(k)
            yield p, str(k), v
            yield from _walk(v, p)


def _active_speed_perturb(value: Any) -> bool:
    if isinstance(value, Mapping):
        if not value.get("enabled", True):
            return False
        return _active_speed_perturb(value.get("factors", value.get("speeds", True)))
    if isinstance(value, (list, tuple)):
        return any(not math.isclose(float(f), 1.0) for f in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return not math.isclose(float(value), 1.0) and float(value) > 0
    return bool(value)


def check_augmentation_compatible(train_cfg: Mapping[str, Any]) -> None:
    """Refuse augmentations that move frames when KD reads labels from an archive.

    The archive holds the teacher's labels for the unperturbed frames of
    each cut. Speed/tempo perturbation changes the number and timing of
    frames (0.9x speed: 11% more frames), SpecAugment's time warping shifts
    them, and cut concatenation changes ids and offsets: the labels would
    then describe other frames than the student sees, silently (icefall's
    distillation recipes had to turn time warp off for this reason).
    Masking (frequency/time masks) does not move frames and is fine.

    Call it with the resolved config (defaults merged): a ``spec_augment``
    section that is enabled but gives no ``time_warp_factor`` gets lhotse's
    default of 80, i.e. time warping on. Raises :class:`ConfigError`.
    """
    kd = train_cfg.get("kd") if isinstance(train_cfg, Mapping) else None
    if not kd or not kd.get("teachers"):
        return
    problems = []
    for path, key, value in _walk(train_cfg):
        k = key.lower()
        if path.startswith("kd.") or path == "kd":
            continue
        if k in ("spec_augment", "specaugment", "specaug") and isinstance(value, Mapping):
            if value.get("enabled", True):
                tw = value.get("time_warp_factor", 80)
                if tw is not None and float(tw) >= 1:
                    problems.append(f"{path}.time_warp_factor = {tw} (time warping moves frames; set it to 0)")
        elif ("speed" in k or "tempo" in k) and "perturb" in k and _active_speed_perturb(value):
            problems.append(f"{path} = {value!r} (speed/tempo perturbation changes the frames; turn it off)")
        elif "concatenate" in k and value and (not isinstance(value, Mapping) or value.get("enabled", True)):
            problems.append(f"{path} = {value!r} (concatenated cuts have other ids and frame offsets)")
    if problems:
        raise ConfigError(
            "knowledge distillation from a soft-label archive needs the student to see the teacher's frames, "
            "but the config moves them:\n  - " + "\n  - ".join(problems)
        )


# --------------------------------------------------------------------------- KD targets


class _Teacher:
    """One teacher: its config entry, archive meta and ``{cut id: archive cut}``."""

    def __init__(self, name: str, archive: Pathlike, weight: float, meta: ArchiveMeta, cuts: dict[str, Cut]) -> None:
        self.name = name
        self.archive = archive
        self.weight = weight
        self.meta = meta
        self.cuts = cuts


class KDTargets:
    """Everything the trainer needs for KD: archives loaded and checked, targets per batch, the loss.

    Built from the ``kd`` section of a config (or a config holding one)::

        kd:
          strategy: frame-kl          # frame-kl | seq | guided
          teachers: [{name: vgg, archive: exp/vgg/softlabels/train_wb, weight: 1.0}, ...]
          combine: average            # single | switch | multistream | average | weighted | best
          switch_mode: round-robin    # switch only: round-robin | random
          seed: 0
          temperature: 2.0            # optional: must equal the archives' temperature
          lambda: 0.5                 # (1-lambda) CTC + lambda KD  (frame-kl, seq)
          skip_blank_frames: false    # frame-kl: blank elimination
          blank_threshold: 0.0
          nbest: 1                    # seq: n-best size (1 = best path)
          beam: 8
          guide_weight: 1.0           # guided: weight of the guide term
          reduction: utterance        # utterance | frame | sum (see kdasr.distill.losses)
          align_spikes: false         # re-time the other teachers onto the first one's spikes (kdasr.distill.align)

    On construction every archive is checked against ``student_cuts`` and
    ``lang_hash`` (every cut present, frame counts, token set, frame
    shift), and the teachers must agree on vocabulary, frame shift and
    temperature: labels at different temperatures cannot share one T^2.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        student_cuts: Iterable[Cut],
        lang_hash: Optional[str],
        vocab_size: Optional[int] = None,
        frame_shift: float = FRAME_SHIFT,
    ) -> None:
        kd = cfg.get("kd", cfg) if isinstance(cfg.get("kd"), Mapping) else cfg
        unknown = sorted(set(kd) - set(KD_DEFAULTS))
        if unknown:
            raise ConfigError(f"kd: unknown keys {unknown}; known: {sorted(KD_DEFAULTS)}")
        c = {**KD_DEFAULTS, **kd}
        self.cfg = c
        if c["strategy"] not in STRATEGIES:
            raise ConfigError(f"kd.strategy must be one of {STRATEGIES}, got {c['strategy']!r}")
        if c["reduction"] not in REDUCTIONS:
            raise ConfigError(f"kd.reduction must be one of {REDUCTIONS}, got {c['reduction']!r}")
        if not 0.0 <= float(c["lambda"]) <= 1.0:
            raise ConfigError(f"kd.lambda must lie in [0, 1], got {c['lambda']}")
        teachers_cfg = c["teachers"]
        if not teachers_cfg:
            raise ConfigError("kd.teachers is empty: name at least one {name, archive} entry")
        combine = c["combine"] or ("single" if len(teachers_cfg) == 1 else None)
        if combine is None:
            raise ConfigError(f"kd.combine must be set for {len(teachers_cfg)} teachers (one of {COMBINES})")
        if combine not in COMBINES:
            raise ConfigError(f"kd.combine must be one of {COMBINES}, got {combine!r}")
        if combine == "single" and len(teachers_cfg) != 1:
            raise ConfigError(f"kd.combine single needs exactly one teacher, got {len(teachers_cfg)}")
        if c["align_spikes"] and len(teachers_cfg) < 2:
            raise ConfigError("kd.align_spikes re-times teachers onto the first one: it needs at least two")
        self.align_spikes = bool(c["align_spikes"])
        self.combine = combine
        self.strategy = c["strategy"]
        self.blank_id = int(c["blank_id"])

        student_cuts = list(student_cuts)
        self.teachers: list[_Teacher] = []
        names = set()
        for i, t in enumerate(teachers_cfg):
            if not isinstance(t, Mapping) or "archive" not in t:
                raise ConfigError(f"kd.teachers[{i}] must be a mapping with at least 'archive', got {t!r}")
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
            self.teachers.append(_Teacher(name, t["archive"], float(t.get("weight", 1.0)), meta, by_id))
        first = self.teachers[0].meta
        for t in self.teachers[1:]:
            for key in ("vocab_size", "frame_shift", "temperature", "lang_hash"):
                if getattr(t.meta, key) != getattr(first, key):
                    raise ArchiveMismatchError(
                        f"teachers disagree on {key}: {self.teachers[0].name} has {getattr(first, key)!r}, "
                        f"{t.name} has {getattr(t.meta, key)!r} ({t.archive})"
                    )
        self.vocab_size = first.vocab_size
        self.temperature = float(first.temperature)
        if c["temperature"] is not None and not math.isclose(float(c["temperature"]), self.temperature):
            raise ConfigError(
                f"kd.temperature is {c['temperature']} but the archives were dumped at {self.temperature}: "
                "dump the soft labels again at the wanted temperature (or drop kd.temperature)"
            )
        self.switcher = (
            TeacherSwitcher(len(self.teachers), c["switch_mode"], int(c["seed"])) if combine == "switch" else None
        )
        self.names = [t.name for t in self.teachers]
        self.last_teachers: list[str] = []
        logging.info(
            "KD: strategy %s, combine %s, teachers %s, T=%g, lambda=%g",
            self.strategy, combine, ", ".join(self.names), self.temperature, float(c["lambda"]),
        )

    # ---- targets

    def _teacher_probs(self, teacher: _Teacher, cut: Cut, frames: int) -> np.ndarray:
        key = archive_key(cut)
        arch = teacher.cuts.get(key)
        if arch is None:
            raise ArchiveMismatchError(f"cut {cut.id} (archive id {key}) is not in the archive of teacher {teacher.name} ({teacher.archive})")
        have = archive_frames(arch)
        if have != frames:
            raise ArchiveMismatchError(
                f"cut {cut.id}: teacher {teacher.name} has {have} frames, the student {frames} "
                "(num_frames must be the student's out_lens = ceil(feature_lens / 4))"
            )
        return load_probs(arch, self.vocab_size)

    def _labels(
        self, teacher: _Teacher, cut: Cut, frames: int, ref: Optional[Sequence[int]],
        anchor: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """A teacher's labels for a cut; under ``align_spikes`` re-timed onto the first teacher's spikes
        (``anchor``: the first teacher's labels of the cut when the caller has them already)."""
        probs = self._teacher_probs(teacher, cut, frames)
        if not self.align_spikes or teacher is self.teachers[0]:
            return probs
        if anchor is None:
            anchor = self._teacher_probs(self.teachers[0], cut, frames)
        return align_to_anchor(anchor, probs, ref, self.blank_id)

    def _every_teacher(
        self, cuts: Sequence[Cut], nf: Sequence[int], refs: Sequence[Optional[Sequence[int]]], T: int,
        device: Optional[torch.device],
    ) -> list[torch.Tensor]:
        """Each teacher's labels of the batch, ``(B, T, V)`` per teacher; the first teacher's are read once."""
        first = [self._teacher_probs(self.teachers[0], c, n) for c, n in zip(cuts, nf)]
        per_teacher = [first] + [
            [self._labels(t, c, n, r, a) for c, n, r, a in zip(cuts, nf, refs, first)] for t in self.teachers[1:]
        ]
        return [self._stack(p, T, device) for p in per_teacher]

    def _stack(self, per_cut: list[np.ndarray], T: int, device: Optional[torch.device]) -> torch.Tensor:
        out = torch.zeros(len(per_cut), T, self.vocab_size, dtype=torch.float32)
        for i, p in enumerate(per_cut):
            out[i, : p.shape[0]] = torch.from_numpy(p)
        return out if device is None else out.to(device)

    def targets_for_batch(
        self,
        cuts: Iterable[Cut],
        num_frames: Union[torch.Tensor, Sequence[int]],
        step: int,
        ref_targets: Optional[Sequence[Sequence[int]]] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> torch.Tensor:
        """Teacher probabilities ``(B, T', V)`` for the batch's cuts, in the order given, zero-padded to ``T' = max(num_frames)``.

        ``num_frames`` are the student's output lengths (``out_lens``), one
        per cut; each must equal the archive's frame count. ``step`` picks
        the teacher under ``switch``; ``ref_targets`` (the batch's token ids)
        are needed by ``best``, and under ``align_spikes`` they are the
        sequences aligned (else each cut's first-teacher best path). Padded
        frames are all-zero rows, which every loss here masks out by length.
        """
        cuts = list(cuts)
        nf = [int(x) for x in (num_frames.tolist() if isinstance(num_frames, torch.Tensor) else num_frames)]
        if len(nf) != len(cuts):
            raise ValueError(f"{len(nf)} frame counts for {len(cuts)} cuts")
        T = max(nf) if nf else 0
        dev = torch.device(device) if device is not None else None
        refs = list(ref_targets) if ref_targets is not None else [None] * len(cuts)
        if self.combine in ("single", "switch", "multistream"):
            if self.combine == "single":
                chosen = [self.teachers[0]] * len(cuts)
            elif self.combine == "switch":
                assert self.switcher is not None
                k = self.switcher.choose(step)
                self.switcher.note(k)
                chosen = [self.teachers[k]] * len(cuts)
            else:
                by_name = {t.name: t for t in self.teachers}
                chosen = []
                for c in cuts:
                    name = (c.custom or {}).get("kd_teacher")
                    if name not in by_name:
                        raise ArchiveMismatchError(
                            f"cut {c.id}: multistream needs the custom field kd_teacher naming one of {self.names} "
                            f"(got {name!r}); build the training cuts with multistream_cuts()"
                        )
                    chosen.append(by_name[name])
            self.last_teachers = [t.name for t in chosen]
            return self._stack([self._labels(t, c, n, r) for t, c, n, r in zip(chosen, cuts, nf, refs)], T, dev)
        all_probs = self._every_teacher(cuts, nf, refs, T, dev)
        if self.combine == "average":
            self.last_teachers = ["average"] * len(cuts)
            return combine_targets(all_probs)
        if self.combine == "weighted":
            self.last_teachers = ["weighted"] * len(cuts)
            return combine_targets(all_probs, [t.weight for t in self.teachers])
        if ref_targets is None:
            raise ValueError("kd.combine best needs the batch's reference targets (ref_targets)")
        lens = torch.tensor(nf, dtype=torch.long, device=all_probs[0].device)
        logps = [torch.log(p.clamp(min=1e-30)) for p in all_probs]
        out, chosen_idx = best_teacher_targets(logps, lens, ref_targets, self.blank_id, self.temperature)
        self.last_teachers = [self.names[i] if i >= 0 else "average" for i in chosen_idx.tolist()]
        return out

    # ---- loss

    def loss(
        self,
        student_logits: torch.Tensor,
        out_lens: torch.Tensor,
        cuts: Iterable[Cut],
        targets: Sequence[Sequence[int]],
        step: int,
    ) -> tuple[torch.Tensor, dict]:
        """The configured KD loss of one batch; ``cuts`` and ``targets`` in the order of the logits' rows."""
        c = self.cfg
        red = c["reduction"]
        cuts = list(cuts)
        stats: dict = {}
        if self.strategy == "guided":
            probs = self.targets_for_batch(cuts, out_lens, step, ref_targets=targets, device=student_logits.device)
            loss = guided_ctc_loss(student_logits, out_lens, targets, probs, self.blank_id,
                                   float(c["guide_weight"]), red)
            stats["guided"] = loss.detach()
            return loss, stats
        ctc = ctc_loss_hard(student_logits, out_lens, targets, self.blank_id, red)
        if self.strategy == "frame-kl":
            probs = self.targets_for_batch(cuts, out_lens, step, ref_targets=targets, device=student_logits.device)
            kd = frame_kl(student_logits, probs, out_lens, self.temperature, self.blank_id,
                          bool(c["skip_blank_frames"]), float(c["blank_threshold"]), red)
        else:
            kd = seq_kd_loss(student_logits, out_lens, self.seq_targets(cuts, out_lens, step, targets),
                             self.blank_id, red)
        stats["ctc"] = ctc.detach()
        stats["kd"] = kd.detach()
        return kd_loss_total(ctc, kd, float(c["lambda"])), stats

    def seq_targets(
        self, cuts: Sequence[Cut], out_lens: torch.Tensor, step: int, ref_targets: Sequence[Sequence[int]]
    ) -> NBestList:
        """The ``seq`` loss's hypotheses: the n-best of the combined teacher, or under ``average``/``weighted``
        the mixture of every teacher's own n-best (:func:`mix_nbest`: no frame-level averaging of spikes)."""
        nbest, beam = int(self.cfg["nbest"]), int(self.cfg["beam"])
        if self.combine not in ("average", "weighted"):
            probs = self.targets_for_batch(cuts, out_lens, step, ref_targets=ref_targets)
            return seq_kd_targets(probs, out_lens, self.blank_id, nbest, beam)
        nf = [int(x) for x in out_lens.tolist()]
        T = max(nf) if nf else 0
        lists = [
            seq_kd_targets(probs, out_lens, self.blank_id, nbest, beam)
            for probs in self._every_teacher(cuts, nf, ref_targets, T, None)
        ]
        weights = [1.0] * len(self.teachers) if self.combine == "average" else [t.weight for t in self.teachers]
        self.last_teachers = [self.combine] * len(cuts)
        return mix_nbest(lists, weights)

    def state_dict(self) -> dict:
        return {"switcher": self.switcher.state_dict() if self.switcher is not None else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.switcher is not None and state.get("switcher") is not None:
            self.switcher.load_state_dict(state["switcher"])


class KDObjective:
    """The trainer's ``Objective`` for KD: runs the student, looks up the labels, returns the loss.

    Rows are matched to cuts through ``batch["cut_ids"]`` (never through
    position in some other list), and the labels through the cut ids.
    """

    def __init__(self, kd: KDTargets) -> None:
        self.kd = kd

    def __call__(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        logits, out_lens = model(batch["features"], batch["feature_lens"])
        by_id = {c.id: c for c in batch["cuts"]}
        cuts = [by_id[i] for i in batch["cut_ids"]]
        return self.kd.loss(logits, out_lens, cuts, batch["targets"], step)

    def state_dict(self) -> dict:
        return self.kd.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.kd.load_state_dict(state)
