"""Greedy CTC decoding on hand-made logits."""
from __future__ import annotations

import pytest
import torch

from kdasr.ctc import greedy_search


def _logits(paths: list[list[int]], vocab: int = 5) -> torch.Tensor:
    """One-hot-ish logits whose argmax follows ``paths`` (padded with blank)."""
    t = max(len(p) for p in paths)
    out = torch.full((len(paths), t, vocab), -5.0)
    for b, path in enumerate(paths):
        for i, tok in enumerate(path):
            out[b, i, tok] = 5.0
        out[b, len(path):, 0] = 5.0
    return out


def test_collapse_repeats_and_drop_blanks():
    logits = _logits([[0, 1, 1, 0, 1, 2, 2, 0, 0, 3]])
    assert greedy_search(logits, torch.tensor([10])) == [[1, 1, 2, 3]]


def test_all_blank_gives_empty():
    assert greedy_search(_logits([[0, 0, 0]]), torch.tensor([3])) == [[]]


def test_padded_batch_ignores_frames_beyond_length():
    logits = _logits([[1, 2, 2, 3, 4], [3, 3, 0, 3, 0]])
    logits[1, 4:] = 0.0
    logits[1, 4, 4] = 9.0  # padding frame whose argmax is a real token
    lens = torch.tensor([5, 4])
    assert greedy_search(logits, lens) == [[1, 2, 3, 4], [3, 3]]
    assert greedy_search(logits, torch.tensor([2, 1])) == [[1, 2], [3]]


def test_logprobs_blank_id_and_edge_shapes():
    logits = _logits([[4, 4, 1, 4]])
    assert greedy_search(logits.log_softmax(-1), torch.tensor([4]), blank_id=4) == [[1]]
    assert greedy_search(torch.zeros(2, 0, 5), torch.tensor([0, 0])) == [[], []]
    assert greedy_search(torch.zeros(0, 3, 5), torch.zeros(0, dtype=torch.long)) == []
    assert greedy_search(_logits([[2, 0, 2]]), torch.tensor([0])) == [[]]
    with pytest.raises(ValueError, match="lens must have shape"):
        greedy_search(logits, torch.tensor([4, 4]))
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        greedy_search(torch.zeros(3, 5), torch.tensor([3]))
