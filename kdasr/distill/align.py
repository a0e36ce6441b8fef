"""Moving one CTC teacher's labels onto another's spike timing, so that the two can be averaged frame by frame.

Independently trained CTC models emit the same tokens on different frames
(spike agreement 0.1-0.3 between the demo's teachers), so their frame-wise
mean smears every spike over several frames and teaches the student neither
timing. Forced-aligning one token sequence to both models gives each token's
frame in each; a monotonic, piecewise-linear map through those pairs (a DTW
whose fixed points are the tokens) then reads the other model's frame for
every anchor frame, and its spikes land where the anchor's are, each once.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torchaudio.functional import forced_align

from kdasr.ctc import collapse


def token_spans(log_probs: torch.Tensor, tokens: Sequence[int], blank_id: int = 0) -> list[tuple[int, int]]:
    """``(first, last + 1)`` frame of each token on the most likely CTC path of ``tokens`` through ``log_probs (T, V)``."""
    if not tokens:
        return []
    path, _ = forced_align(log_probs.float().cpu()[None], torch.tensor([list(tokens)], dtype=torch.int32),
                           blank=blank_id)
    spans: list[list[int]] = []
    p = path[0].tolist()
    # a valid CTC path separates repeated tokens by a blank, so every run is one token
    for t, k in enumerate(p):
        if k == blank_id:
            continue
        if t == 0 or p[t - 1] != k:
            spans.append([t, t + 1])
        else:
            spans[-1][1] = t + 1
    return [(a, b) for a, b in spans]


def token_frames(probs: np.ndarray, tokens: Sequence[int], blank_id: int = 0) -> np.ndarray:
    """The first frame of each token on the most likely CTC path of ``tokens`` through ``probs`` ``(T, V)``."""
    logp = torch.from_numpy(np.log(np.clip(probs, 1e-30, None)))
    return np.asarray([a for a, _ in token_spans(logp, tokens, blank_id)], dtype=np.int64)


def warp_index(anchor_frames: np.ndarray, other_frames: np.ndarray, num_frames: int) -> np.ndarray:
    """For each anchor frame, the other model's frame to read, or -1 where it has none.

    Token ``i`` reads the other's token ``i`` (``anchor_frames[i]`` ->
    ``other_frames[i]``); the frames between two tokens (and before the first,
    after the last) read the other's frames between the same two tokens,
    stretched linearly. Where the other has no frame there (its two spikes are
    adjacent) the answer is -1, so that no spike is read twice.
    """
    if len(anchor_frames) != len(other_frames):
        raise ValueError(f"{len(anchor_frames)} anchor token frames but {len(other_frames)} for the other model")
    idx = np.full(num_frames, -1, dtype=np.int64)
    idx[anchor_frames] = other_frames
    bounds_a = [-1, *anchor_frames.tolist(), num_frames]
    bounds_b = [-1, *other_frames.tolist(), num_frames]
    for lo_a, hi_a, lo_b, hi_b in zip(bounds_a, bounds_a[1:], bounds_b, bounds_b[1:]):
        n_a, n_b = hi_a - lo_a - 1, hi_b - lo_b - 1
        if n_a > 0 and n_b > 0:
            idx[lo_a + 1 : hi_a] = lo_b + 1 + (np.arange(n_a) * n_b) // n_a
    return idx


def align_to_anchor(
    anchor: np.ndarray, other: np.ndarray, tokens: Optional[Sequence[int]] = None, blank_id: int = 0
) -> np.ndarray:
    """``other``'s distributions ``(T, V)`` re-timed so that its spikes fall on ``anchor``'s frames.

    ``tokens``: the sequence to align, normally the cut's transcript; when it
    is empty or missing (untranscribed cuts) the anchor's own best path is
    used. With no token at all there is nothing to move. Anchor frames the
    other model has no counterpart for keep the anchor's own distribution.
    """
    if anchor.shape != other.shape:
        raise ValueError(f"anchor {anchor.shape} and other {other.shape} labels differ in shape")
    toks = list(tokens) if tokens else collapse(anchor.argmax(-1).tolist(), blank_id)
    if not toks:
        return other
    idx = warp_index(token_frames(anchor, toks, blank_id), token_frames(other, toks, blank_id), anchor.shape[0])
    return np.where((idx >= 0)[:, None], other[np.maximum(idx, 0)], anchor)
