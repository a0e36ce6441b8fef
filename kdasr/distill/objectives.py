"""KD losses (``kd.strategy``): a registry of kinds, each computing one batch's loss from the teachers' targets.

- ``frame-kl``: ``(1 - lambda) CTC + lambda KL`` to the teachers' frame
  distributions (optionally without the blank frames);
- ``seq``: ``(1 - lambda) CTC + lambda`` CTC on the teachers' n-best
  (sequence-level KD);
- ``guided``: guided CTC (Kurata & Audhkhasi 2019), CTC plus a term that
  rewards spiking where the guide spikes.

Each kind declares the ``kd`` keys it reads and checks their values before
any archive is opened; the loss functions themselves are in
:mod:`kdasr.distill.losses`.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping, Protocol, Sequence

import torch
from lhotse.cut import Cut

from kdasr.config import ConfigError
from kdasr.ctc import ctc_loss_hard
from kdasr.distill.losses import NBestList, frame_kl, guided_ctc_loss, kd_loss_total, seq_kd_loss
from kdasr.registry import Registry


class TargetSource(Protocol):
    """What a loss asks the teachers for (:class:`kdasr.distill.strategies.KDTargets`)."""

    temperature: float

    def targets_for_batch(self, cuts: Sequence[Cut], num_frames: torch.Tensor, step: int,
                          ref_targets: Sequence[Sequence[int]], device: Any) -> torch.Tensor: ...

    def seq_targets(self, cuts: Sequence[Cut], out_lens: torch.Tensor, step: int,
                    ref_targets: Sequence[Sequence[int]]) -> NBestList: ...


class KDLoss(abc.ABC):
    """One ``kd.strategy``: built from the resolved ``kd`` section, called once per batch."""

    name: ClassVar[str] = ""
    #: the ``kd`` keys this loss reads besides ``reduction`` and ``blank_id``
    options: ClassVar[tuple[str, ...]] = ()
    #: whether it learns from the combined frame-level targets (their spikes' timing matters)
    frame_targets: ClassVar[bool] = True

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.reduction = cfg["reduction"]
        self.blank_id = int(cfg["blank_id"])

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        """Refuse values this loss cannot use (called before any archive is opened)."""

    @abc.abstractmethod
    def __call__(self, source: TargetSource, logits: torch.Tensor, out_lens: torch.Tensor, cuts: Sequence[Cut],
                 targets: Sequence[Sequence[int]], step: int) -> tuple[torch.Tensor, dict]:
        """``(loss, detached terms for logging)``; ``cuts`` and ``targets`` in the order of the logits' rows."""


KD_LOSSES: Registry[type[KDLoss]] = Registry("KD loss", "kd.strategy")


def _check_lambda(cfg: Mapping[str, Any]) -> None:
    if not 0.0 <= float(cfg["lambda"]) <= 1.0:
        raise ConfigError(f"kd.lambda must lie in [0, 1], got {cfg['lambda']}")


@KD_LOSSES.register("frame-kl")
class FrameKL(KDLoss):
    options = ("lambda", "skip_blank_frames", "blank_threshold")

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.lam = float(cfg["lambda"])
        self.skip_blank_frames = bool(cfg["skip_blank_frames"])
        self.blank_threshold = float(cfg["blank_threshold"])

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        _check_lambda(cfg)

    def __call__(self, source: TargetSource, logits: torch.Tensor, out_lens: torch.Tensor, cuts: Sequence[Cut],
                 targets: Sequence[Sequence[int]], step: int) -> tuple[torch.Tensor, dict]:
        ctc = ctc_loss_hard(logits, out_lens, targets, self.blank_id, self.reduction)
        probs = source.targets_for_batch(cuts, out_lens, step, ref_targets=targets, device=logits.device)
        kd = frame_kl(logits, probs, out_lens, source.temperature, self.blank_id,
                      self.skip_blank_frames, self.blank_threshold, self.reduction)
        return kd_loss_total(ctc, kd, self.lam), {"ctc": ctc.detach(), "kd": kd.detach()}


@KD_LOSSES.register("seq")
class SequenceKD(KDLoss):
    options = ("lambda", "nbest", "beam")
    frame_targets = False

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.lam = float(cfg["lambda"])

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        _check_lambda(cfg)
        for key in ("nbest", "beam"):
            if int(cfg[key]) < 1:
                raise ConfigError(f"kd.{key} must be >= 1, got {cfg[key]}")

    def __call__(self, source: TargetSource, logits: torch.Tensor, out_lens: torch.Tensor, cuts: Sequence[Cut],
                 targets: Sequence[Sequence[int]], step: int) -> tuple[torch.Tensor, dict]:
        ctc = ctc_loss_hard(logits, out_lens, targets, self.blank_id, self.reduction)
        kd = seq_kd_loss(logits, out_lens, source.seq_targets(cuts, out_lens, step, targets),
                         self.blank_id, self.reduction)
        return kd_loss_total(ctc, kd, self.lam), {"ctc": ctc.detach(), "kd": kd.detach()}


@KD_LOSSES.register("guided")
class GuidedCTC(KDLoss):
    options = ("guide_weight",)

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.guide_weight = float(cfg["guide_weight"])

    def __call__(self, source: TargetSource, logits: torch.Tensor, out_lens: torch.Tensor, cuts: Sequence[Cut],
                 targets: Sequence[Sequence[int]], step: int) -> tuple[torch.Tensor, dict]:
        probs = source.targets_for_batch(cuts, out_lens, step, ref_targets=targets, device=logits.device)
        loss = guided_ctc_loss(logits, out_lens, targets, probs, self.blank_id, self.guide_weight, self.reduction)
        return loss, {"guided": loss.detach()}
