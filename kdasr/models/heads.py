"""What the ``specialists`` model computes: token subsets of its heads and the rules that combine them.

The model (:mod:`kdasr.models.specialists`) needs these to produce one
distribution over the vocabulary; training and clustering
(:mod:`kdasr.distill.specialists`, where the design is explained) need the
subset checks too. They live with the model because models come before
distillation in the one-way import order.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

Subsets = list[list[int]]


# --------------------------------------------------------------------------- subsets


def validate_subsets(subsets: Sequence[Sequence[int]], vocab_size: int, blank_id: int = 0) -> Subsets:
    """Check token subsets and return them as lists of ints (order within a subset kept).

    Every non-blank token must be covered by at least one subset (the
    combination has no score for an uncovered token); blank must not be
    listed (every head has it); a subset must be non-empty and free of
    duplicates. Subsets may overlap.
    """
    if not isinstance(subsets, Sequence) or isinstance(subsets, str) or len(subsets) < 1:
        raise ValueError(f"specialist subsets must be a non-empty list of token-id lists, got {subsets!r}")
    out: Subsets = []
    for i, s in enumerate(subsets):
        if isinstance(s, (str, bytes)) or not isinstance(s, Sequence) or len(s) == 0:
            raise ValueError(f"specialist subset {i} must be a non-empty list of token ids, got {s!r}")
        ids = [int(t) for t in s]
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"specialist subset {i} has token ids outside 0..{vocab_size - 1}: {bad}")
        if blank_id in ids:
            raise ValueError(f"specialist subset {i} lists blank ({blank_id}): every head has blank already")
        if len(set(ids)) != len(ids):
            raise ValueError(f"specialist subset {i} lists a token twice: {ids}")
        out.append(ids)
    covered = {t for s in out for t in s}
    missing = [t for t in range(vocab_size) if t != blank_id and t not in covered]
    if missing:
        raise ValueError(f"tokens {missing} are in no specialist subset: every non-blank token needs a head")
    return out


def head_size(subset: Sequence[int]) -> int:
    """Classes of a specialist head: blank, the subset's tokens, the dustbin."""
    return len(subset) + 2


# --------------------------------------------------------------------------- combination


def cover_matrix(subsets: Sequence[Sequence[int]], vocab_size: int, blank_id: int = 0,
                 generalist: bool = False) -> torch.Tensor:
    """``(C, V)`` 0/1 matrix: row j is the token that non-dustbin class j of the concatenated heads stands for.

    Classes are each head's ``[blank, subset...]`` in head order, then the
    generalist's V tokens when there is one.
    """
    cols = [t for s in subsets for t in [blank_id, *s]]
    if generalist:
        cols += list(range(vocab_size))
    m = torch.zeros(len(cols), vocab_size)
    m[torch.arange(len(cols)), torch.tensor(cols)] = 1.0
    return m


def _strip_dustbins(head_scores: Sequence[torch.Tensor], subsets: Sequence[Sequence[int]],
                    generalist: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated non-dustbin scores ``(..., C)`` (cover_matrix order) and the dustbin scores ``(..., S)``."""
    if len(head_scores) != len(subsets):
        raise ValueError(f"{len(head_scores)} heads for {len(subsets)} subsets")
    for i, (h, s) in enumerate(zip(head_scores, subsets)):
        if h.shape[-1] != head_size(s):
            raise ValueError(f"head {i} has {h.shape[-1]} classes, its subset needs {head_size(s)} (blank + {len(s)} + dustbin)")
    parts = [h[..., :-1] for h in head_scores] + ([generalist] if generalist is not None else [])
    return torch.cat(parts, dim=-1), torch.stack([h[..., -1] for h in head_scores], dim=-1)


def average_rule(head_scores: Sequence[torch.Tensor], subsets: Sequence[Sequence[int]],
                 cover: torch.Tensor, generalist: Optional[torch.Tensor]) -> torch.Tensor:
    """The authors' rule: drop dustbins, average each token's scores over the heads covering it, log-softmax.

    ``head_scores[s]`` is ``(..., len(subsets[s]) + 2)`` (blank, subset,
    dustbin); a ``generalist`` ``(..., V)`` counts as a head covering every
    token; ``cover`` is :func:`cover_matrix` (a model keeps it as a buffer).
    Returns ``(..., V)`` log-probs.
    """
    scores, _ = _strip_dustbins(head_scores, subsets, generalist)
    cover = cover.to(scores)
    counts = cover.sum(0)
    if bool((counts == 0).any()):
        raise ValueError(f"tokens {(counts == 0).nonzero().flatten().tolist()} are covered by no head")
    return torch.log_softmax(scores @ (cover / counts), dim=-1)


def uncovered_matrix(subsets: Sequence[Sequence[int]], vocab_size: int, blank_id: int = 0) -> torch.Tensor:
    """``(S, V)`` 0/1: the tokens each head's dustbin stands for."""
    u = torch.ones(len(subsets), vocab_size)
    for i, s in enumerate(subsets):
        u[i, [blank_id, *s]] = 0.0
    return u


def hinton_gradient(logq: torch.Tensor, covered_mass: torch.Tensor, dustbin: torch.Tensor,
                    uncovered: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Gradient of Hinton's objective divided by the number of heads, w.r.t. the logits z of ``q = softmax(z)``.

    For one head, ``d/dz KL(p_s || q_s) = q - t_s`` with ``t_s`` the head's
    distribution on its covered tokens plus its dustbin mass spread over the
    uncovered tokens in proportion to q (``p_dust * q_k / sum_{j not in S} q_j``);
    the generalist's term gives ``q - p_g``. Analytic, so it runs under
    ``torch.inference_mode`` (the dumper's) and in exported graphs alike.
    ``covered_mass`` is ``sum_s`` of the heads' covered probabilities
    scattered to tokens (plus p_g), ``dustbin`` ``(..., S)`` the dustbin probs.
    """
    q = logq.exp()
    spread = dustbin / (q @ uncovered.t()).clamp(min=1e-30)  # (..., S)
    target = (covered_mass + q * (spread @ uncovered)) / num_heads
    return q - target


def hinton_rule(head_logprobs: Sequence[torch.Tensor], subsets: Sequence[Sequence[int]], cover: torch.Tensor,
                uncovered: torch.Tensor, generalist: Optional[torch.Tensor], steps: int, lr: float) -> torch.Tensor:
    """Hinton's rule: ``argmin_q KL(p_g || q) + sum_s KL(p_s || q_s)`` by ``steps`` gradient steps on log q.

    ``head_logprobs`` are normalised log-probs per head (blank, subset,
    dustbin); ``generalist`` (optional) ``(..., V)`` log-probs; ``cover`` and
    ``uncovered`` are :func:`cover_matrix` and :func:`uncovered_matrix`.
    Returns ``(..., V)`` log-probs. See :func:`hinton_gradient` for the step.
    """
    logp, dust_logp = _strip_dustbins(head_logprobs, subsets, generalist)
    cover, uncovered = cover.to(logp), uncovered.to(logp)
    covered_mass = logp.exp() @ cover
    dustbin = dust_logp.exp()
    num_heads = len(subsets) + (generalist is not None)
    z = average_rule(head_logprobs, subsets, cover, generalist)
    for _ in range(steps):
        z = torch.log_softmax(z - lr * hinton_gradient(z, covered_mass, dustbin, uncovered, num_heads), dim=-1)
    return z
