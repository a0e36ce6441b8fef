"""How several teachers' labels become one target per cut (``kd.combine``): a registry of modes.

- ``single``: one teacher.
- ``switch`` (Fukuda et al., Interspeech 2017): one teacher per minibatch,
  ``round-robin`` or ``random`` (seeded); the choice is a pure function of
  (mode, seed, step), so a resumed run picks the same teachers.
- ``multistream`` (Fukuda et al. 2017): each teacher's labels become a
  separate copy of the utterance in the epoch (:func:`multistream_cuts`).
- ``average`` / ``weighted`` (Hinton et al. 2015): the (weighted)
  arithmetic mean of the teachers' distributions; with ``seq`` the mean is
  taken over their transcripts instead (:func:`mix_nbest`), which needs no
  frame alignment between the teachers.
- ``best``: per utterance, the teacher whose labels give the lowest CTC loss
  on the reference transcript.

Each mode is a :class:`CombineMode` registered in :data:`COMBINE_MODES`; it
declares how many teachers it takes, whether it needs the batch's reference
transcripts, and whether it trains on copies of the cuts, and the trainer
asks it instead of comparing names.
"""
from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from lhotse import CutSet
from lhotse.cut import Cut

from kdasr.config import ConfigError
from kdasr.data.dataset import source_id
from kdasr.distill.archive import ArchiveMismatchError
from kdasr.distill.losses import NBestList, mix_nbest, seq_kd_targets
from kdasr.distill.teachers import LabelBatch, TeacherLabels
from kdasr.registry import Registry

TEACHER_SEP = "#"
"""Separator of multistream copy ids: ``<orig_id>#<teacher>``."""

SWITCH_SCHEDULES = {
    "round-robin": lambda n, seed, step: step % n,
    "random": lambda n, seed, step: int(np.random.default_rng([seed, step]).integers(n)),
}
"""``kd.switch_mode``: ``(num_teachers, seed, step) -> teacher index``, a pure function of its arguments."""


# --------------------------------------------------------------------------- switch


class TeacherSwitcher:
    """Which teacher labels minibatch ``step`` (the ``switch`` strategy).

    :meth:`choose` is a pure function of (mode, seed, step): round-robin is
    ``step % n``; random draws from a generator seeded by ``(seed, step)``.
    Resuming therefore needs no RNG state, and skipping or replaying batches
    cannot shift the schedule. :meth:`note` counts the choices per teacher
    (for the statistics), which is what :meth:`state_dict` saves besides the
    schedule it checks on resume.
    """

    def __init__(self, num_teachers: int, mode: str = "round-robin", seed: int = 0) -> None:
        if num_teachers < 1:
            raise ValueError(f"num_teachers must be >= 1, got {num_teachers}")
        if mode not in SWITCH_SCHEDULES:
            raise ValueError(f"switch mode must be one of {', '.join(SWITCH_SCHEDULES)}, got {mode!r}")
        self.num_teachers = num_teachers
        self.mode = mode
        self.seed = int(seed)
        self.counts = [0] * num_teachers

    def choose(self, step: int) -> int:
        return SWITCH_SCHEDULES[self.mode](self.num_teachers, self.seed, int(step))

    def note(self, teacher: int) -> None:
        """Count a choice made through :meth:`choose` (for the statistics only)."""
        self.counts[teacher] += 1

    def state_dict(self) -> dict:
        return {"num_teachers": self.num_teachers, "mode": self.mode, "seed": self.seed,
                "counts": list(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore; refuses a state saved with another schedule (the resumed run would silently differ)."""
        for key in ("num_teachers", "mode", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"teacher switcher was saved with {key}={state[key]!r} but is configured with "
                    f"{getattr(self, key)!r}: resuming would change which teacher labels which batch"
                )
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
        orig = source_id(c)
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


# --------------------------------------------------------------------------- the modes


class CombineMode(abc.ABC):
    """One ``kd.combine`` mode: built once per run over the loaded teachers, asked for each batch's targets."""

    name: ClassVar[str] = ""
    #: how many teachers the mode takes: (at least, at most or None)
    num_teachers: ClassVar[tuple[int, Optional[int]]] = (1, None)
    #: whether it needs the batch's reference token ids (ranking teachers by CTC)
    needs_refs: ClassVar[bool] = False
    #: the ``kd`` keys this mode reads besides the teachers
    options: ClassVar[tuple[str, ...]] = ()
    #: whether its targets average the teachers frame by frame (which needs their spikes aligned)
    averages_frames: ClassVar[bool] = False

    def __init__(self, cfg: Mapping[str, Any], labels: TeacherLabels) -> None:
        self.labels = labels

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], num_teachers: int) -> None:
        """Refuse a ``kd`` section this mode cannot serve, before any archive is opened."""
        lo, hi = cls.num_teachers
        if num_teachers < lo or (hi is not None and num_teachers > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise ConfigError(f"kd.combine {cls.name} needs {want} teacher(s), got {num_teachers}")

    def training_cuts(self, cuts: Iterable[Cut]) -> Optional[CutSet]:
        """The cuts the student trains on when they differ from the given ones (None: train on those)."""
        return None

    @abc.abstractmethod
    def targets(self, b: LabelBatch, step: int) -> tuple[torch.Tensor, list[str]]:
        """``(probs (B, T', V), teacher name per cut)`` for one batch; ``step`` is the training step."""

    def nbest(self, b: LabelBatch, step: int, nbest: int, beam: int) -> tuple[NBestList, list[str]]:
        """The ``seq`` loss's hypotheses: the n-best of the combined distribution."""
        probs, names = self.targets(b, step)
        lens = torch.tensor(b.frames, dtype=torch.long)
        return seq_kd_targets(probs, lens, self.labels.blank_id, nbest, beam), names

    def state_dict(self) -> Optional[dict]:
        return None

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        pass


COMBINE_MODES: Registry[type[CombineMode]] = Registry("combine mode", "kd.combine")


@COMBINE_MODES.register("single")
class Single(CombineMode):
    num_teachers = (1, 1)

    def targets(self, b: LabelBatch, step: int) -> tuple[torch.Tensor, list[str]]:
        chosen = [self.labels.teachers[0]] * len(b.cuts)
        return self.labels.chosen(chosen, b), [t.name for t in chosen]


@COMBINE_MODES.register("switch")
class Switch(CombineMode):
    options = ("switch_mode", "seed")

    def __init__(self, cfg: Mapping[str, Any], labels: TeacherLabels) -> None:
        super().__init__(cfg, labels)
        self.switcher = TeacherSwitcher(len(labels.teachers), cfg["switch_mode"], int(cfg["seed"]))

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], num_teachers: int) -> None:
        super().check_config(cfg, num_teachers)
        if cfg["switch_mode"] not in SWITCH_SCHEDULES:
            raise ConfigError(
                f"kd.switch_mode must be one of {', '.join(SWITCH_SCHEDULES)}, got {cfg['switch_mode']!r}"
            )

    def targets(self, b: LabelBatch, step: int) -> tuple[torch.Tensor, list[str]]:
        k = self.switcher.choose(step)
        self.switcher.note(k)
        chosen = [self.labels.teachers[k]] * len(b.cuts)
        return self.labels.chosen(chosen, b), [t.name for t in chosen]

    def state_dict(self) -> Optional[dict]:
        return self.switcher.state_dict()

    def load_state_dict(self, state: Optional[Mapping[str, Any]]) -> None:
        if state is not None:
            self.switcher.load_state_dict(state)


@COMBINE_MODES.register("multistream")
class Multistream(CombineMode):
    def training_cuts(self, cuts: Iterable[Cut]) -> Optional[CutSet]:
        return multistream_cuts(cuts, self.labels.names)

    def targets(self, b: LabelBatch, step: int) -> tuple[torch.Tensor, list[str]]:
        by_name = {t.name: t for t in self.labels.teachers}
        chosen = []
        for c in b.cuts:
            name = (c.custom or {}).get("kd_teacher")
            if name not in by_name:
                raise ArchiveMismatchError(
                    f"cut {c.id}: multistream needs the custom field kd_teacher naming one of {self.labels.names} "
                    f"(got {name!r}); build the training cuts with multistream_cuts()"
                )
            chosen.append(by_name[name])
        return self.labels.chosen(chosen, b), [t.name for t in chosen]


@COMBINE_MODES.register("average")
class Average(CombineMode):
    """The mean of the teachers' distributions; under ``seq`` the mixture of their own n-best lists
    (:func:`mix_nbest`: no frame-level averaging of spikes)."""

    averages_frames = True

    def weights(self) -> Optional[list[float]]:
        return None

    def targets(self, b: LabelBatch, step: int) -> tuple[torch.Tensor, list[str]]:
        return combine_targets(self.labels.every_teacher(b), self.weights()), [self.name] * len(b.cuts)

    def nbest(self, b: LabelBatch, step: int, nbest: int, beam: int) -> tuple[NBestList, list[str]]:
        lens = torch.tensor(b.frames, dtype=torch.long)
        lists = [
            seq_kd_targets(probs, lens, self.labels.blank_id, nbest, beam) for probs in self.labels.every_teacher(b)
        ]
        weights = self.weights() or [1.0] * len(self.labels.teachers)
        return mix_nbest(lists, weights), [self.name] * len(b.cuts)


@COMBINE_MODES.register("weighted")
class Weighted(Average):
    """:class:`Average` with each teacher's ``weight`` (normalised to sum 1)."""

    def weights(self) -> Optional[list[float]]:
        return [t.weight for t in self.labels.teachers]


@COMBINE_MODES.register("best")
class Best(CombineMode):
    needs_refs = True

    def targets(self, b: LabelBatch, step: int) -> tuple[torch.Tensor, list[str]]:
        all_probs = self.labels.every_teacher(b)
        lens = torch.tensor(b.frames, dtype=torch.long, device=all_probs[0].device)
        logps = [torch.log(p.clamp(min=1e-30)) for p in all_probs]
        out, chosen = best_teacher_targets(logps, lens, b.refs, self.labels.blank_id, self.labels.temperature)
        return out, [self.labels.names[i] if i >= 0 else "average" for i in chosen.tolist()]
