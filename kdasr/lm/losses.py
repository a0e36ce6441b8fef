"""LM distillation loss with trust regularization (after Shi, Hwang, Lei, Sheng, ICASSP 2019).

Per predicted token with true next word ``y``::

    q      = mean_k softmax(z_k / T)                  teachers' averaged distribution at temperature T
    p_T(y) = mean_k softmax(z_k)[y]                    teachers' probability of the true word (T = 1)
    r      = p_T(y) / max_v mean_k softmax(z_k)[v]     1 where the teachers rank y first
    w      = trust(r) in [0, 1]
    loss   = (1 - lambda * w) * CE(y) + lambda * w * T^2 * KL(q || softmax(z_s / T))

and the batch loss is the mean over tokens. Where the teachers are trusted
(``w = 1``) this is the usual ``(1 - lambda) CE + lambda KL``; where they
are not, the token's KD weight moves to the text's own label instead of
vanishing, so every token keeps a total weight of 1. The trust is judged
relative to the teachers' best word (``r``), not on ``p_T(y)`` alone: where
the next word is truly uncertain (any digit after a digit) a good teacher
gives the truth a low probability and still deserves trust, which a bound
on ``p_T(y)`` would take from it. Forms (``kd.trust``):

- ``none``: ``w = 1`` (plain KD);
- ``threshold``: ``w = 1[r >= threshold]``;
- ``smooth``: ``w = r ** gamma``.

``T^2`` keeps the KD gradient's size independent of ``T`` (Hinton et al. 2015).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from kdasr.config import ConfigError
from kdasr.lm.data import PAD_ID


def _none(r: torch.Tensor, opts: dict) -> torch.Tensor:
    return torch.ones_like(r)


def _threshold(r: torch.Tensor, opts: dict) -> torch.Tensor:
    return (r >= float(opts["threshold"])).to(r.dtype)


def _smooth(r: torch.Tensor, opts: dict) -> torch.Tensor:
    return r.clamp(min=0.0, max=1.0) ** float(opts["gamma"])


TRUST: dict[str, Callable[[torch.Tensor, dict], torch.Tensor]] = {
    "none": _none,
    "threshold": _threshold,
    "smooth": _smooth,
}


def check_trust(name: str) -> None:
    if name not in TRUST:
        raise ConfigError(f"kd.trust {name!r} is unknown; choose from {', '.join(TRUST)}")


def lm_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: Sequence[torch.Tensor],
    targets: torch.Tensor,
    lam: float,
    temperature: float = 1.0,
    trust: str = "none",
    trust_opts: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss above over the non-padded tokens; stats: ``ce``, ``kl``, ``trust`` (mean w).

    ``student_logits`` and each of ``teacher_logits`` are ``(B, L, V)``;
    ``targets (B, L)`` holds :data:`~kdasr.lm.data.PAD_ID` past each length.
    """
    check_trust(trust)
    mask = targets != PAD_ID
    s = student_logits[mask].float()
    y = targets[mask]
    with torch.no_grad():
        t = torch.stack([z[mask].float() for z in teacher_logits])  # (K, N, V)
        p1 = t.softmax(-1).mean(0)
        r = p1.gather(-1, y[:, None]).squeeze(-1) / p1.max(-1).values
        w = TRUST[trust](r, trust_opts or {})
        q = (t / temperature).softmax(-1).mean(0)
    ce = F.cross_entropy(s, y, reduction="none")
    log_ps = F.log_softmax(s / temperature, dim=-1)
    kl = (q * (q.clamp_min(1e-30).log() - log_ps)).sum(-1) * temperature ** 2
    loss = ((1.0 - lam * w) * ce + lam * w * kl).mean()
    return loss, {"ce": ce.mean().detach(), "kl": kl.mean().detach(), "trust": w.mean()}
