"""The KD objective the trainer runs: the ``kd`` config section checked, the teachers' targets, the loss.

A ``kd`` section names a loss (``kd.strategy``, :mod:`kdasr.distill.objectives`),
the teachers' archives (:mod:`kdasr.distill.teachers`) and how several
teachers combine (``kd.combine``, :mod:`kdasr.distill.combine`); each of
those kinds is a registry entry that declares what it needs.
:func:`resolve_kd_config` checks the section without opening an archive;
:class:`KDTargets` then loads and checks the archives and dispatches through
the registries.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from lhotse import CutSet
from lhotse.cut import Cut

from kdasr.config import ConfigError
from kdasr.ctc import REDUCTIONS
from kdasr.distill.combine import COMBINE_MODES
from kdasr.distill.losses import NBestList
from kdasr.distill.objectives import KD_LOSSES
from kdasr.distill.teachers import (
    TEACHER_INPUTS,
    TeacherLabels,
    ViewInputs,
    check_teacher_entries,
    check_temperature,
    label_batch,
    load_teachers,
    warn_if_spikes_disagree,
)
from kdasr.models.common import FRAME_SHIFT, model_inputs

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
    "teacher_input": "clean",  # online teachers: clean | augmented (kdasr.distill.teachers.TEACHER_INPUTS)
}
# Keys every loss and combine mode reads; the others belong to one kind (its ``options``).
_SHARED_KEYS = ("strategy", "teachers", "combine", "temperature", "reduction", "blank_id", "align_spikes",
                "teacher_input")


def resolve_kd_config(cfg: Mapping[str, Any]) -> dict:
    """The ``kd`` section (of a config, or the section itself) with defaults and ``combine`` filled in.

    Checked without opening an archive: unknown keys, the loss and combine
    mode (each checks its own keys), the teacher entries. A key set to
    something other than its default that neither the loss nor the combine
    mode reads is logged as a warning: it would change nothing.
    """
    kd = cfg.get("kd", cfg) if isinstance(cfg.get("kd"), Mapping) else cfg
    unknown = sorted(set(kd) - set(KD_DEFAULTS))
    if unknown:
        raise ConfigError(f"kd: unknown keys {unknown}; known: {sorted(KD_DEFAULTS)}")
    c = {**KD_DEFAULTS, **kd}
    loss = KD_LOSSES.get(c["strategy"])
    if c["reduction"] not in REDUCTIONS:
        raise ConfigError(f"kd.reduction must be one of {REDUCTIONS}, got {c['reduction']!r}")
    teachers = c["teachers"]
    if not teachers:
        raise ConfigError("kd.teachers is empty: name at least one {name, archive} or {name, checkpoint} entry")
    check_teacher_entries(teachers)
    if c["combine"] is None:
        if len(teachers) != 1:
            raise ConfigError(
                f"kd.combine must be set for {len(teachers)} teachers (one of {', '.join(COMBINE_MODES.names())})"
            )
        c["combine"] = "single"
    mode = COMBINE_MODES.get(c["combine"])
    loss.check_config(c)
    mode.check_config(c, len(teachers))
    if c["teacher_input"] not in TEACHER_INPUTS:
        raise ConfigError(f"kd.teacher_input must be one of {', '.join(TEACHER_INPUTS)}, got {c['teacher_input']!r}")
    if c["align_spikes"] and len(teachers) < 2:
        raise ConfigError("kd.align_spikes re-times teachers onto the first one: it needs at least two")
    read = set(_SHARED_KEYS) | set(loss.options) | set(mode.options)
    for key in sorted(set(kd) - read):
        if kd[key] != KD_DEFAULTS[key]:
            logging.warning("kd.%s = %r changes nothing: kd.strategy %s and kd.combine %s do not read it",
                            key, kd[key], loss.name, mode.name)
    return c


class KDTargets:
    """Everything the trainer needs for KD: archives loaded and checked, targets per batch, the loss.

    Built from the ``kd`` section of a config (or a config holding one)::

        kd:
          strategy: frame-kl          # frame-kl | seq | guided
          teachers:                   # each names an archive or a checkpoint run online
            - {name: vgg, archive: exp/vgg/softlabels, weight: 1.0}
            - {name: lstm, checkpoint: exp/lstm/best.pt, cuts: data/fbank/cuts_train_wb.jsonl.gz}
          combine: average            # single | switch | multistream | average | weighted | best
          switch_mode: round-robin    # switch only: round-robin | random
          seed: 0
          temperature: 2.0            # optional: must equal the archives'; online teachers run at it
          lambda: 0.5                 # (1-lambda) CTC + lambda KD  (frame-kl, seq)
          skip_blank_frames: false    # frame-kl: blank elimination
          blank_threshold: 0.0
          nbest: 1                    # seq: n-best size (1 = best path)
          beam: 8
          guide_weight: 1.0           # guided: weight of the guide term
          reduction: utterance        # utterance | frame | sum (see kdasr.distill.losses)
          align_spikes: false         # re-time the other teachers onto the first one's spikes (kdasr.distill.align)
          teacher_input: clean        # online teachers read the student's frames without gain, noise,
                                      # reverberation and masks, or augmented: exactly the student's features

    On construction every archive is checked against ``student_cuts`` and
    ``lang_hash`` (every cut present, frame counts, token set, frame
    shift), every online teacher's checkpoint against the features it will
    read (``cuts``: another view of the same cuts), and the teachers must
    agree on vocabulary, frame shift and temperature
    (:func:`kdasr.distill.teachers.load_teachers`).
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        student_cuts: Iterable[Cut],
        lang_hash: Optional[str],
        vocab_size: Optional[int] = None,
        frame_shift: float = FRAME_SHIFT,
    ) -> None:
        c = resolve_kd_config(cfg)
        self.cfg = c
        self.combine = c["combine"]
        self.strategy = c["strategy"]
        self.blank_id = int(c["blank_id"])
        self.align_spikes = bool(c["align_spikes"])
        self.teachers, self.views = load_teachers(
            c["teachers"], list(student_cuts), lang_hash, vocab_size, frame_shift, c["temperature"],
            c["teacher_input"])
        self._inputs: ViewInputs = {}
        self.labels = TeacherLabels(self.teachers, self.blank_id, self.align_spikes)
        self.vocab_size = self.labels.vocab_size
        self.temperature = self.labels.temperature
        check_temperature(c["temperature"], self.temperature)
        self.mode = COMBINE_MODES.get(self.combine)(c, self.labels)
        self.kd_loss = KD_LOSSES.get(self.strategy)(c)
        if self.mode.averages_frames and self.kd_loss.frame_targets and not self.align_spikes:
            warn_if_spikes_disagree(self.teachers)
        self.names = self.labels.names
        self.last_teachers: list[str] = []
        logging.info(
            "KD: strategy %s, combine %s, teachers %s, T=%g, lambda=%g",
            self.strategy, self.combine, ", ".join(self.names), self.temperature, float(c["lambda"]),
        )

    def training_cuts(self, cuts: Iterable[Cut]) -> Optional[CutSet]:
        """The cuts the student trains on when the combine mode changes them (multistream), else None."""
        return self.mode.training_cuts(cuts)

    def targets_for_batch(
        self,
        cuts: Iterable[Cut],
        num_frames: Union[torch.Tensor, Sequence[int]],
        step: int,
        ref_targets: Optional[Sequence[Sequence[int]]] = None,
        device: Optional[Union[str, torch.device]] = None,
        inputs: Optional[ViewInputs] = None,
    ) -> torch.Tensor:
        """Teacher probabilities ``(B, T', V)`` for the batch's cuts, in the order given, zero-padded to ``T' = max(num_frames)``.

        ``num_frames`` are the student's output lengths (``out_lens``), one
        per cut; each must equal the archive's frame count. ``step`` picks
        the teacher under ``switch``; ``ref_targets`` (the batch's token ids)
        are needed by ``best``, and under ``align_spikes`` they are the
        sequences aligned (else each cut's first-teacher best path). Padded
        frames are all-zero rows, which every loss here masks out by length.
        Online teachers read ``inputs`` (see :meth:`loss`; default: those of the loss being computed).
        """
        if self.mode.needs_refs and ref_targets is None:
            raise ValueError(f"kd.combine {self.combine} needs the batch's reference targets (ref_targets)")
        b = label_batch(cuts, num_frames, ref_targets, device, self._inputs if inputs is None else inputs)
        probs, self.last_teachers = self.mode.targets(b, step)
        return probs

    def seq_targets(
        self, cuts: Sequence[Cut], out_lens: torch.Tensor, step: int, ref_targets: Sequence[Sequence[int]]
    ) -> NBestList:
        """The ``seq`` loss's hypotheses: the n-best of the combined teacher, or under ``average``/``weighted``
        the mixture of every teacher's own n-best (:func:`kdasr.distill.losses.mix_nbest`)."""
        b = label_batch(cuts, out_lens, ref_targets, None, self._inputs)
        out, self.last_teachers = self.mode.nbest(b, step, int(self.cfg["nbest"]), int(self.cfg["beam"]))
        return out

    def loss(
        self,
        student_logits: torch.Tensor,
        out_lens: torch.Tensor,
        cuts: Iterable[Cut],
        targets: Sequence[Sequence[int]],
        step: int,
        inputs: Optional[ViewInputs] = None,
    ) -> tuple[torch.Tensor, dict]:
        """The configured KD loss of one batch; ``cuts`` and ``targets`` in the order of the logits' rows.

        ``inputs``: what online teachers read, ``(features, feature_lens)`` in the same row order per
        view (None: the student's own; a ``cuts`` path: another view); held for this call only.
        """
        self._inputs = dict(inputs or {})
        try:
            return self.kd_loss(self, student_logits, out_lens, list(cuts), targets, step)
        finally:
            self._inputs = {}

    def state_dict(self) -> dict:
        return {"combine": self.mode.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # "switcher": the key of checkpoints written before the combine modes became a registry
        self.mode.load_state_dict(state.get("combine", state.get("switcher")))


class KDObjective:
    """The trainer's ``Objective`` for KD: runs the student, looks up the labels, returns the loss.

    Rows are matched to cuts through ``batch["cut_ids"]`` (never through
    position in some other list), and the labels through the cut ids.
    Online teachers read the batch's features (and ``batch["views"]``).
    """

    def __init__(self, kd: KDTargets) -> None:
        self.kd = kd

    @property
    def views(self) -> dict:
        """Other views of the training cuts the batches must carry: key -> :class:`~kdasr.distill.teachers.TeacherView`."""
        return self.kd.views

    def __call__(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        extra = model_inputs(model, batch["targets"], batch["features"].device)
        logits, out_lens = model(batch["features"], batch["feature_lens"], **extra)
        by_id = {c.id: c for c in batch["cuts"]}
        cuts = [by_id[i] for i in batch["cut_ids"]]
        inputs = {None: (batch["features"], batch["feature_lens"]), **batch.get("views", {})}
        return self.kd.loss(logits, out_lens, cuts, batch["targets"], step, inputs)

    def state_dict(self) -> dict:
        return self.kd.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.kd.load_state_dict(state)
