"""Greedy (best-path) CTC decoding: argmax per frame, collapse repeats, drop blanks.

It is the decoder used for dev WER during training, so it works on whole
padded batches on whatever device the logits live on, with one transfer of
the kept ids to the CPU at the end.
"""
from __future__ import annotations

import torch

from kdasr.models.common import make_pad_mask


def greedy_search(logits: torch.Tensor, lens: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
    """Token ids per utterance from ``logits`` or log-probs ``(B, T, V)`` and valid frame counts ``lens (B,)``.

    Argmax is the same for logits and log-probs, so no softmax is needed. A
    token repeated across frames counts once unless a blank separates it.
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
