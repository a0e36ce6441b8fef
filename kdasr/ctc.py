"""CTC primitives every other package shares: the hard-label loss and objective, collapse, greedy and prefix beam search.

One home so that training (the loss, dev greedy WER), decoding (greedy) and
distillation (sequence-level targets, spike alignment) cannot drift apart
on what a CTC path means. The frame arithmetic the models implement
(subsampling 4, 40 ms output frames, ``output_lengths``) lives with them in
:mod:`kdasr.models.common`: models come before this module in the one-way
import order (docs/ARCHITECTURE.md), so they cannot import it.

Loss shapes: logits are ``(B, T, V)``, ``lens`` is ``(B,)`` output frames
per utterance; frames at or after ``lens[b]`` are padding and never
contribute. Losses are computed in float32 whatever the autocast dtype of
the logits (bf16 CTC is not accurate enough).

Reductions (argument ``reduction``, same meaning in every loss of kdasr):

- ``"utterance"`` (default): the sum over frames and utterances divided by
  the number of utterances that take part. A CTC loss is a sum over the
  frames of an utterance, so this is the convention (ESPnet's) under which
  CTC and frame-level KD summed over the same frames stay on the same scale.
- ``"frame"``: divided by the number of frames that take part (per-frame
  nats: comparable across corpora with different utterance lengths).
- ``"sum"``: no normalisation (DDP all-reduce users normalise themselves).
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from kdasr.models.common import make_pad_mask, model_inputs

REDUCTIONS = ("utterance", "frame", "sum")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def zero_loss(like: torch.Tensor) -> torch.Tensor:
    """A 0 that stays connected to the graph, so ``backward`` works on a batch with nothing to learn."""
    return like.float().sum() * 0.0


def reduce_loss(total: torch.Tensor, reduction: str, num_utts: int, num_frames: Union[int, torch.Tensor]) -> torch.Tensor:
    """``total`` divided as ``reduction`` says (see the module docstring)."""
    if reduction == "sum":
        return total
    if reduction == "utterance":
        return total / max(int(num_utts), 1)
    return total / torch.clamp(torch.as_tensor(num_frames, dtype=total.dtype, device=total.device), min=1.0)


# --------------------------------------------------------------------------- hard-label loss


def ctc_loss_hard(
    logits: torch.Tensor,
    lens: torch.Tensor,
    targets: Sequence[Sequence[int]],
    blank_id: int = 0,
    reduction: str = "utterance",
) -> torch.Tensor:
    """CTC on the transcripts, skipping utterances without one (empty target list).

    ``zero_infinity=True``: an utterance whose transcript needs more frames
    than it has contributes 0 instead of inf (which would poison the batch).
    Reductions: ``utterance`` divides by the number of transcribed
    utterances, ``frame`` by their frames, plus ``token`` (by their target
    tokens, ESPnet's other choice) and ``sum``.
    """
    if reduction not in REDUCTIONS + ("token",):
        raise ValueError(f"reduction must be one of {REDUCTIONS + ('token',)}, got {reduction!r}")
    if len(targets) != logits.shape[0]:
        raise ValueError(f"{len(targets)} target lists for a batch of {logits.shape[0]}")
    keep = [i for i, t in enumerate(targets) if len(t) > 0]
    if not keep:
        return zero_loss(logits)
    dev = logits.device
    idx = torch.tensor(keep, dtype=torch.long, device=dev)
    lens = lens.to(dev).long()
    logp = torch.log_softmax(logits.float().index_select(0, idx), dim=-1).transpose(0, 1)
    flat = torch.tensor([t for i in keep for t in targets[i]], dtype=torch.long, device=dev)
    tlens = torch.tensor([len(targets[i]) for i in keep], dtype=torch.long, device=dev)
    ilens = lens.index_select(0, idx)
    loss = F.ctc_loss(logp, flat, ilens, tlens, blank=blank_id, reduction="none", zero_infinity=True).sum()
    if reduction == "token":
        return loss / tlens.sum().clamp(min=1)
    return reduce_loss(loss, reduction, len(keep), ilens.sum())


# --------------------------------------------------------------------------- training objective


class Objective(Protocol):
    """Computes the training loss of one batch; KD objectives also read soft labels.

    An objective may also have ``views`` (``cuts`` path -> cuts by id): other views of the training
    cuts its batches must carry (``batch["views"]``), which online teachers of another view read.
    """

    def __call__(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class CtcObjective:
    """Plain CTC on the transcripts (the hard-label baseline and every teacher).

    A model that declares the transcript as an input (the Oracle Teacher,
    ``inputs = ("features", "targets")``) also reads it; it corrupts its copy
    itself in train mode. Untranscribed cuts get an empty input and no CTC term.
    """

    def __call__(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        extra = model_inputs(model, batch["targets"], batch["features"].device)
        logits, out_lens = model(batch["features"], batch["feature_lens"], **extra)
        loss = ctc_loss_hard(logits, out_lens, batch["targets"])
        return loss, {"ctc": loss.detach()}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# --------------------------------------------------------------------------- paths and searches


def collapse(path: Sequence[int], blank_id: int = 0) -> list[int]:
    """A frame path's transcript: repeats merged, blanks removed (a repeat needs a blank between)."""
    out: list[int] = []
    prev = None
    for t in path:
        if t != prev and t != blank_id:
            out.append(int(t))
        prev = t
    return out


def greedy_search(logits: torch.Tensor, lens: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
    """Best-path token ids per utterance from ``logits`` or log-probs ``(B, T, V)`` and valid frame counts ``lens (B,)``.

    :func:`collapse` of the per-frame argmax, done on whole padded batches on
    whatever device the logits live on (it is the dev-WER decoder of
    training), with one transfer of the kept ids to the CPU at the end.
    Argmax is the same for logits and log-probs, so no softmax is needed.
    """
    if logits.dim() != 3:
        raise ValueError(f"expected logits (B, T, V), got shape {tuple(logits.shape)}")
    b, t, _ = logits.shape
    lens = torch.as_tensor(lens, device=logits.device).long()
    if lens.shape != (b,):
        raise ValueError(f"lens must have shape ({b},), got {tuple(lens.shape)}")
    if b == 0:
        return []
    if t == 0:
        return [[] for _ in range(b)]
    best = logits.argmax(dim=-1)  # (B, T)
    new = torch.ones_like(best, dtype=torch.bool)
    new[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = new & (best != blank_id) & ~make_pad_mask(lens.clamp(max=t), t)
    ids = best[keep].cpu().tolist()
    counts = keep.sum(dim=1).cpu().tolist()
    out, start = [], 0
    for n in counts:
        out.append(ids[start:start + n])
        start += n
    return out


def _lse(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_search(
    log_probs: np.ndarray, blank_id: int = 0, beam: int = 8, token_prune: int = 8
) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one utterance's ``(T, V)`` log-probs: ``[(prefix, log prob)]``, best first.

    The log prob of a prefix sums over all alignments that collapse to it
    (within the beam), which is the sequence posterior sequence-level KD
    wants. Only the ``token_prune`` most probable tokens of each frame are
    extended, which keeps this cheap for BPE vocabularies. (Decoding with a
    lexicon or an LM uses torchaudio's search, :mod:`kdasr.decode.beam`.)
    """
    NEG = -math.inf
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, NEG]}  # prefix -> [log p(ends in blank), log p(ends in token)]
    V = log_probs.shape[1]
    kp = min(token_prune, V)
    for t in range(log_probs.shape[0]):
        row = log_probs[t]
        cands = np.argpartition(-row, kp - 1)[:kp] if kp < V else np.arange(V)
        nxt: dict[tuple[int, ...], list[float]] = {}

        def get(pfx: tuple[int, ...]) -> list[float]:
            if pfx not in nxt:
                nxt[pfx] = [NEG, NEG]
            return nxt[pfx]

        for pfx, (pb, pnb) in beams.items():
            ptot = _lse(pb, pnb)
            for c in cands:
                c = int(c)
                lp = float(row[c])
                if c == blank_id:
                    e = get(pfx)
                    e[0] = _lse(e[0], ptot + lp)
                    continue
                new = pfx + (c,)
                if pfx and pfx[-1] == c:
                    e = get(new)
                    e[1] = _lse(e[1], pb + lp)  # a repeat needs a blank in between
                    e = get(pfx)
                    e[1] = _lse(e[1], pnb + lp)  # otherwise it merges into the last token
                else:
                    e = get(new)
                    e[1] = _lse(e[1], ptot + lp)
        alive = [(k, v) for k, v in nxt.items() if _lse(*v) > NEG]  # e.g. a repeat with no blank to separate it
        beams = dict(sorted(alive, key=lambda kv: -_lse(*kv[1]))[:beam])
    return [(list(p), _lse(*v)) for p, v in sorted(beams.items(), key=lambda kv: -_lse(*kv[1]))]
