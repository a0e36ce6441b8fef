"""Re-timing one CTC teacher's labels onto another's spikes (kdasr.distill.align), against hand-built paths."""
from __future__ import annotations

import numpy as np
import pytest

from kdasr.distill.align import align_to_anchor, token_frames, warp_index

V = 4


def spiky(path: list[int], peak: float = 0.85) -> np.ndarray:
    """Distributions ``(T, V)`` whose argmax follows ``path``, the rest spread evenly."""
    p = np.full((len(path), V), (1 - peak) / (V - 1))
    p[np.arange(len(path)), path] = peak
    return p


def test_token_frames_follow_the_best_path() -> None:
    # tokens 1 1 2: the repeat needs a blank between its two spikes
    assert token_frames(spiky([0, 1, 0, 1, 0, 0, 2, 0]), [1, 1, 2]).tolist() == [1, 3, 6]
    # a token held over several frames starts at its first
    assert token_frames(spiky([0, 3, 3, 3, 0, 2]), [3, 2]).tolist() == [1, 5]
    assert token_frames(spiky([0, 0]), []).tolist() == []


def test_warp_index_maps_tokens_onto_tokens_and_gaps_onto_gaps() -> None:
    idx = warp_index(np.array([2, 6]), np.array([4, 7]), 10)
    # before token 0: frames 0-1 read 0-3; between: 3-5 read 5-6; after: 7-9 read 8-9
    assert idx.tolist() == [0, 2, 4, 5, 5, 6, 7, 8, 8, 9]
    assert np.all(np.diff(idx) >= 0)  # monotonic: no frame order is reversed
    # the other's spikes are adjacent (frames 1, 2): the anchor's gap has no counterpart
    assert warp_index(np.array([0, 3]), np.array([1, 2]), 5).tolist() == [1, -1, -1, 2, 3]
    with pytest.raises(ValueError, match="anchor"):
        warp_index(np.array([1]), np.array([1, 2]), 4)


def test_align_to_anchor_moves_spikes_onto_the_anchors_frames() -> None:
    anchor = spiky([0, 1, 0, 0, 2, 0, 0, 3, 0, 0])
    late = spiky([0, 0, 0, 1, 0, 0, 2, 0, 0, 3])  # same tokens, each spike 2 frames later
    moved = align_to_anchor(anchor, late, [1, 2, 3])
    assert moved.argmax(-1).tolist() == anchor.argmax(-1).tolist()
    # rows are the other model's own distributions, only re-timed, except the
    # two frames after the last token, which the late model does not have
    assert all(any(np.array_equal(row, r) for r in late) for row in moved[:8])
    np.testing.assert_array_equal(moved[8:], anchor[8:])
    # no transcript: the anchor's best path is aligned instead
    np.testing.assert_array_equal(align_to_anchor(anchor, late, None), moved)
    # averaging after alignment keeps the spikes; averaging before does not
    assert ((anchor + moved) / 2).argmax(-1).tolist() == anchor.argmax(-1).tolist()
    assert ((anchor + late) / 2)[7].max() < 0.5
    blank = spiky([0, 0, 0])
    assert align_to_anchor(blank, spiky([0, 1, 0]), []) is not None
    np.testing.assert_array_equal(align_to_anchor(blank, spiky([0, 1, 0]), []), spiky([0, 1, 0]))
    with pytest.raises(ValueError, match="shape"):
        align_to_anchor(anchor, late[:5], [1])
