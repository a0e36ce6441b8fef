"""Losses for distilling CTC students: frame-level KD, sequence-level KD, guided CTC.

Shapes and reductions are those of :mod:`kdasr.ctc` (hard-label CTC lives
there): logits and teacher distributions are ``(B, T, V)``, ``lens`` is
``(B,)`` output frames per utterance, padding never contributes, and
everything is computed in float32 (bf16 KL is not accurate enough). Under the
default ``utterance`` reduction CTC and frame-level KD summed over the same
frames stay on the same scale, so ``kd_loss_total``'s lambda means what it
says. Combine terms computed with the same reduction only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from kdasr.ctc import check_reduction, collapse, ctc_loss_hard, prefix_beam_search, reduce_loss, zero_loss

NBestList = list[list[tuple[list[int], float]]]
"""Per utterance, a list of ``(token ids, weight)`` hypotheses (weights sum to 1)."""


def _valid(lens: torch.Tensor, T: int, device: torch.device) -> torch.Tensor:
    """``(B, T)`` bool mask, True on frames inside each utterance."""
    lens = lens.to(device)
    return torch.arange(T, device=device).unsqueeze(0) < lens.unsqueeze(1)


def _trim(x: torch.Tensor, lens: torch.Tensor, what: str) -> torch.Tensor:
    """``x[:, :max(lens)]``, with a clear error when ``x`` is shorter than the lengths say."""
    T = int(lens.max()) if lens.numel() else 0
    if x.shape[1] < T:
        raise ValueError(f"{what} has {x.shape[1]} frames but lens asks for up to {T}")
    return x[:, :T]


# --------------------------------------------------------------------------- frame-level KD


def blank_frame_mask(teacher_probs: torch.Tensor, blank_id: int = 0, blank_threshold: float = 0.0) -> torch.Tensor:
    """``(B, T)`` True where the teacher's top token is blank with probability >= ``blank_threshold``.

    CTC teachers output blank on most frames; those frames say little beyond
    "nothing here" and dominate a frame-level loss. With threshold 0 every
    blank-argmax frame counts as blank; a higher threshold keeps the
    uncertain ones (often just before or after a spike). The threshold
    applies to the distribution as stored, i.e. at the archive's temperature.
    """
    top = teacher_probs.argmax(dim=-1)
    return (top == blank_id) & (teacher_probs[..., blank_id] >= blank_threshold)


def frame_kl(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    lens: torch.Tensor,
    temperature: float = 1.0,
    blank_id: int = 0,
    skip_blank_frames: bool = False,
    blank_threshold: float = 0.0,
    reduction: str = "utterance",
) -> torch.Tensor:
    """Frame-level KD: ``T^2 * sum_frames KL(p_teacher,T || softmax(student / T))``.

    ``teacher_probs`` must already be at temperature T (a soft-label archive
    stores ``softmax(teacher_logits / T)``); the student is softened here by
    the same T. The ``T^2`` factor (Hinton et al. 2015) keeps the gradient
    magnitude independent of T, so lambda need not be retuned with T.
    With ``skip_blank_frames`` the frames where the teacher's top token is
    blank (see :func:`blank_frame_mask`) are dropped (blank elimination);
    ``frame`` reduction then divides by the frames kept, ``utterance`` by the
    utterances with at least one valid frame.
    """
    check_reduction(reduction)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lens = lens.to(student_logits.device).long()
    s = _trim(student_logits, lens, "student logits").float()
    p = _trim(teacher_probs.to(student_logits.device), lens, "teacher probs").float()
    if s.shape[-1] != p.shape[-1]:
        raise ValueError(f"student has {s.shape[-1]} tokens, teacher {p.shape[-1]}")
    mask = _valid(lens, s.shape[1], s.device)
    if skip_blank_frames:
        mask = mask & ~blank_frame_mask(p, blank_id, blank_threshold)
    if not bool(mask.any()):
        return zero_loss(student_logits)
    logq = torch.log_softmax(s / temperature, dim=-1)
    kl = (torch.xlogy(p, p) - p * logq).sum(dim=-1)
    total = (kl * mask).sum() * (temperature**2)
    return reduce_loss(total, reduction, int((lens > 0).sum()), mask.sum())


def kd_loss_total(ctc: torch.Tensor, kd: torch.Tensor, lam: float) -> torch.Tensor:
    """``(1 - lambda) * CTC + lambda * KD``; both terms must use the same reduction."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"KD lambda must lie in [0, 1], got {lam}")
    return (1.0 - lam) * ctc + lam * kd


# --------------------------------------------------------------------------- sequence-level KD


def seq_kd_targets(
    teacher_probs: torch.Tensor,
    lens: torch.Tensor,
    blank_id: int = 0,
    nbest: int = 1,
    beam: int = 8,
    token_prune: int = 8,
) -> NBestList:
    """Sequence-level KD targets (Kim & Rush 2016, for CTC): the teacher's likely transcripts.

    ``nbest == 1``: the best path (per-frame argmax, repeats merged, blanks
    removed), weight 1. ``nbest > 1``: the n best prefixes of a CTC prefix
    beam search over the teacher's distribution, weighted by their posterior
    renormalised over the n-best (so weights sum to 1). The weights come from
    the distribution as given, i.e. the archive's temperature flattens them;
    the best path does not depend on temperature. An empty hypothesis (the
    teacher hears nothing) is kept: it teaches the student to output blanks.
    """
    if nbest < 1:
        raise ValueError(f"nbest must be >= 1, got {nbest}")
    lens_l = [int(x) for x in lens.tolist()]
    p = teacher_probs.detach().float().cpu()
    out: NBestList = []
    if nbest == 1:
        best = p.argmax(dim=-1).tolist()
        for b, n in enumerate(lens_l):
            out.append([(collapse(best[b][:n], blank_id), 1.0)])
        return out
    logp = torch.log(p.clamp(min=1e-30)).numpy().astype(np.float64)
    for b, n in enumerate(lens_l):
        hyps = prefix_beam_search(logp[b, :n], blank_id, beam=max(beam, nbest), token_prune=token_prune)[:nbest]
        scores = np.array([s for _, s in hyps])
        w = np.exp(scores - scores.max())
        w = w / w.sum()
        out.append([(h, float(wi)) for (h, _), wi in zip(hyps, w)])
    return out


def mix_nbest(per_teacher: Sequence[NBestList], weights: Sequence[float]) -> NBestList:
    """The teachers' mixture at the sequence level: each teacher's n-best scaled by its weight, identical transcripts merged.

    Averaging CTC teachers frame by frame mixes spikes that sit on different
    frames; their transcripts carry no frame positions, so a mixture of
    hypotheses is alignment-free. Weights are normalised to sum to 1, so
    every utterance's merged list sums to 1 as well; order: by weight, ties
    in first-seen order.
    """
    if len(per_teacher) != len(weights) or not per_teacher:
        raise ValueError(f"{len(per_teacher)} teachers' n-best lists for {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"teacher weights must be >= 0 with a positive sum, got {list(weights)}")
    sizes = {len(lists) for lists in per_teacher}
    if len(sizes) != 1:
        raise ValueError(f"teachers' n-best lists cover different numbers of utterances: {sorted(sizes)}")
    out: NBestList = []
    for utt in zip(*per_teacher):
        merged: dict[tuple[int, ...], float] = {}
        for lst, tw in zip(utt, weights):
            for h, w in lst:
                merged[tuple(h)] = merged.get(tuple(h), 0.0) + w * tw / total
        out.append([(list(h), w) for h, w in sorted(merged.items(), key=lambda kv: -kv[1])])
    return out


def seq_kd_loss(
    student_logits: torch.Tensor,
    lens: torch.Tensor,
    nbest_targets: NBestList,
    blank_id: int = 0,
    reduction: str = "utterance",
) -> torch.Tensor:
    """Weighted CTC of the student against each utterance's teacher hypotheses: ``sum_n w_n CTC(y_n)``.

    ``utterance`` reduction divides by the utterances with at least one
    hypothesis, ``frame`` by their frames.
    """
    check_reduction(reduction)
    if len(nbest_targets) != student_logits.shape[0]:
        raise ValueError(f"{len(nbest_targets)} n-best lists for a batch of {student_logits.shape[0]}")
    dev = student_logits.device
    lens = lens.to(dev).long()
    rows, hyps, weights = [], [], []
    for b, lst in enumerate(nbest_targets):
        for h, w in lst:
            rows.append(b)
            hyps.append(list(h))
            weights.append(float(w))
    if not rows:
        return zero_loss(student_logits)
    idx = torch.tensor(rows, dtype=torch.long, device=dev)
    logp = torch.log_softmax(student_logits.float(), dim=-1).index_select(0, idx).transpose(0, 1)
    flat = torch.tensor([t for h in hyps for t in h], dtype=torch.long, device=dev)
    tlens = torch.tensor([len(h) for h in hyps], dtype=torch.long, device=dev)
    per = F.ctc_loss(logp, flat, lens.index_select(0, idx), tlens, blank=blank_id, reduction="none", zero_infinity=True)
    total = (per * torch.tensor(weights, dtype=per.dtype, device=dev)).sum()
    used = sorted(set(rows))
    return reduce_loss(total, reduction, len(used), lens[used].sum())


# --------------------------------------------------------------------------- guided CTC


def guide_mask(guide: torch.Tensor, lens: torch.Tensor, blank_id: int = 0) -> torch.Tensor:
    """Kurata & Audhkhasi's mask M: one-hot of the guide's per-frame argmax, zero on blank and padded frames.

    Works on logits, log-probs or probabilities alike (only the argmax matters).
    """
    lens = lens.to(guide.device).long()
    g = _trim(guide, lens, "guide").argmax(dim=-1)
    keep = _valid(lens, g.shape[1], g.device) & (g != blank_id)
    return F.one_hot(g, guide.shape[-1]).to(torch.float32) * keep.unsqueeze(-1)


def guided_ctc_loss(
    student_logits: torch.Tensor,
    lens: torch.Tensor,
    targets: Sequence[Sequence[int]],
    guide: torch.Tensor,
    blank_id: int = 0,
    guide_weight: float = 1.0,
    reduction: str = "utterance",
) -> torch.Tensor:
    """Guided CTC (Kurata & Audhkhasi, Interspeech 2019): ``CTC - w * sum_{t,k} M[t,k] P_student[t,k]``.

    The guide term rewards the student for spiking on the same token at the
    same frame as the guide (the teacher), which keeps the student's spike
    timing aligned with the teacher's, the precondition for frame-level KD
    and for ensembles of CTC models. ``P`` are the student's softmax
    posteriors (T=1). Both terms are summed over the batch and then divided
    alike: ``utterance`` by the number of utterances (the guide term also
    applies to untranscribed utterances, whose CTC term is 0), ``frame`` by
    the number of valid frames. The loss can be negative; its minimum is
    reached when the student matches the transcript and the guide's spikes.
    """
    check_reduction(reduction)
    lens = lens.to(student_logits.device).long()
    ctc = ctc_loss_hard(student_logits, lens, targets, blank_id=blank_id, reduction="sum")
    s = _trim(student_logits, lens, "student logits").float()
    M = guide_mask(guide.to(s.device), lens, blank_id)
    if M.shape != s.shape:
        raise ValueError(f"guide gives {tuple(M.shape)} but the student {tuple(s.shape)} (frames or vocab differ)")
    reward = (M * torch.softmax(s, dim=-1)).sum()
    return reduce_loss(ctc - guide_weight * reward, reduction, int((lens > 0).sum()), lens.sum())


# --------------------------------------------------------------------------- diagnostics


@torch.no_grad()
def spike_agreement(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    lens: torch.Tensor,
    blank_id: int = 0,
    symmetric: bool = False,
) -> float:
    """How well two CTC models' spikes line up in time (for choosing KD partners and checking guided CTC).

    Directed (default): among the valid frames where A's argmax is not
    blank, the fraction where B's argmax is the same token. Symmetric: frames
    where both agree on a non-blank token over frames where either is
    non-blank (intersection over union of spikes). NaN when there is no spike
    to compare, which is not the same as agreeing.
    """
    lens = lens.to(logits_a.device).long()
    a = _trim(logits_a, lens, "logits_a").argmax(dim=-1)
    b = _trim(logits_b.to(logits_a.device), lens, "logits_b").argmax(dim=-1)
    valid = _valid(lens, a.shape[1], a.device)
    a_spk = valid & (a != blank_id)
    b_spk = valid & (b != blank_id)
    same = a_spk & (a == b)
    denom = (a_spk | b_spk).sum() if symmetric else a_spk.sum()
    if int(denom) == 0:
        return float("nan")
    return float(same.sum()) / float(denom)
