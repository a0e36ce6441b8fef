"""A unified ensemble of specialised CTC teachers (Zaras, Passalis & Tefas, PRL 2021; Hinton et al. 2015).

Each specialist (a *head*) models a subset S of the tokens: its classes are
``[blank, S..., dustbin]``, where the dustbin stands for every token outside
S. All heads are trained at once, in one model (:mod:`kdasr.models.specialists`),
with :class:`SpecialistObjective`, and their outputs are combined into one
distribution over the whole vocabulary so the model looks like any other
teacher to the soft-label dumper and the decoders.

Token subsets come from data or from YAML. From data (Hinton's recipe): the
covariance of a generalist's posteriors over frames, one column per token,
clustered with K-means (:func:`cluster_tokens`); tokens the generalist
confuses rise and fall together on the same frames, so their columns are
alike and they land in the same specialist, which then spends its capacity
on telling them apart.

Blank is a class of every head, not a head of its own. A head is trained
with CTC, and CTC needs a blank to separate spikes and fill the frames
between them; a blank-only head would be a binary "token or not" classifier
that CTC cannot train without the tokens themselves. So every head is a
complete CTC model over its reduced alphabet, and blank is simply the token
that all heads cover: the combination rules average it like any other
shared token.

Out-of-subset tokens map to the dustbin one for one (``A x y B`` with only
A, B in S becomes ``A # # B``), not merged into one dustbin per run: then
every head spikes once per token, at the frames where the full model would,
so the heads' frames line up and can be combined frame by frame.

Combination (both give ``(..., V)`` log-probs):

- :func:`kdasr.models.heads.average_rule` (the authors' rule): drop each head's dustbin,
  average the scores of a token over the heads that cover it, one softmax.
  The model passes each head's log-softmax as its scores: raw logits carry
  an arbitrary per-head, per-frame offset (softmax ignores it), which
  averaging across heads would turn into a bias for one head's tokens.
- :func:`kdasr.models.heads.hinton_rule`: the q minimising ``KL(p_g || q) + sum_s KL(p_s || q_s)``,
  where ``q_s`` is q over head s's classes with the dustbin getting q summed
  over the tokens s does not cover (and the generalist term is present when
  the model has a generalist head), found by a few gradient steps on the
  logits of q from the authors' combination.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import yaml

from kdasr.ctc import ctc_loss_hard
from kdasr.data.tokenizer import Tokenizer
from kdasr.distill.archive import load_archive, load_probs
from kdasr.models.heads import Subsets, validate_subsets
from kdasr.utils.io import Pathlike, atomic_write_text

# --------------------------------------------------------------------------- subsets


def map_targets(targets: Sequence[Sequence[int]], subset: Sequence[int]) -> list[list[int]]:
    """Transcripts in a head's classes: the i-th token of the subset -> i + 1, any other token -> dustbin.

    One dustbin per out-of-subset token (see the module docstring), so the
    head's transcript has as many tokens as the full one.
    """
    local = {t: i + 1 for i, t in enumerate(subset)}
    dustbin = len(subset) + 1
    return [[local.get(int(t), dustbin) for t in seq] for seq in targets]


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int, iters: int) -> np.ndarray:
    """Labels of Lloyd's K-means with k-means++ seeding, best inertia of ``n_init`` runs; no cluster is empty."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    best_labels, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = [x[rng.integers(n)]]
        for _ in range(1, k):
            d = np.min(((x[:, None] - np.stack(centers)[None]) ** 2).sum(-1), axis=1)
            p = d / d.sum() if d.sum() > 0 else np.full(n, 1.0 / n)
            centers.append(x[rng.choice(n, p=p)])
        c = np.stack(centers)
        for _ in range(iters):
            d = ((x[:, None] - c[None]) ** 2).sum(-1)
            labels = d.argmin(1)
            for j in range(k):  # an empty cluster takes the point farthest from its own centre
                if not np.any(labels == j):
                    far = int(np.argmax(d[np.arange(n), labels] * (np.bincount(labels, minlength=k)[labels] > 1)))
                    labels[far] = j
            new = np.stack([x[labels == j].mean(0) for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = float(((x - c[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels.copy(), inertia
    assert best_labels is not None
    return best_labels


def cluster_tokens(
    posteriors: np.ndarray,
    num_subsets: int,
    blank_id: int = 0,
    overlap: int = 0,
    seed: int = 0,
    n_init: int = 10,
    iters: int = 100,
) -> Subsets:
    """Token subsets from a generalist's frame posteriors ``(N, V)`` (Hinton et al. 2015, section 5).

    Frames whose top token is blank are dropped first: on them every other
    token is near 0 together, a common rise and fall that would make all
    tokens look alike. The covariance of the remaining frames' posteriors
    (blank excluded) gives each token a column; K-means on the columns
    groups tokens that are predicted together, i.e. confused. ``overlap``
    adds to each subset the ``overlap`` outside tokens most covarying with it
    (positive covariance only), so borderline tokens get two specialists.
    Subsets are sorted by their smallest token id.
    """
    p = np.asarray(posteriors, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"posteriors must be (frames, vocab), got shape {p.shape}")
    V = p.shape[1]
    tokens = [t for t in range(V) if t != blank_id]
    if not 1 <= num_subsets <= len(tokens):
        raise ValueError(f"num_subsets must lie in 1..{len(tokens)} (the non-blank tokens), got {num_subsets}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    p = p[p.argmax(1) != blank_id][:, tokens]
    if p.shape[0] < 2:
        raise ValueError("fewer than 2 frames where the generalist's top token is not blank: cannot cluster")
    cov = np.cov(p, rowvar=False)
    labels = _kmeans(cov, num_subsets, seed, n_init, iters)
    subsets = [[i for i in range(len(tokens)) if labels[i] == j] for j in range(num_subsets)]
    if overlap:
        extended = []
        for s in subsets:
            outside = [i for i in range(len(tokens)) if i not in s]
            score = cov[np.ix_(outside, s)].mean(1) if outside else np.zeros(0)
            extra = [outside[i] for i in np.argsort(-score, kind="stable")[:overlap] if score[i] > 0]
            extended.append(sorted(s + extra))
        subsets = extended
    return sorted(([tokens[i] for i in s] for s in subsets), key=min)


def posteriors_from_archive(archive_dir: Pathlike, max_frames: int = 200_000, seed: int = 0) -> np.ndarray:
    """``(N, V)`` frame posteriors of a generalist's soft-label archive (``kdasr soft-labels``).

    Cuts are visited in a seeded random order until ``max_frames`` frames are
    read, so a large archive gives a fair sample without reading all of it.
    The archive's temperature flattens the posteriors, which only helps
    reveal confusions.
    """
    meta, cuts = load_archive(archive_dir)
    cuts = list(cuts)
    rows, n = [], 0
    for i in np.random.default_rng(seed).permutation(len(cuts)):
        p = load_probs(cuts[int(i)], meta.vocab_size)
        rows.append(p)
        n += p.shape[0]
        if n >= max_frames:
            break
    if not rows:
        raise ValueError(f"archive {archive_dir} holds no cuts")
    return np.concatenate(rows)[:max_frames]


def save_subsets(subsets: Sequence[Sequence[int]], path: Pathlike, tokens: Sequence[str]) -> None:
    """Write subsets as token symbols (readable, and tied to the token set by name, not by id)."""
    doc = {"subsets": [[tokens[t] for t in s] for s in subsets]}
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def load_subsets(path: Pathlike, tokenizer: Any) -> Subsets:
    """Subsets of a YAML file (``subsets: [[sym, ...], ...]``, symbols or ids) as checked token ids."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"specialist subsets file {path} does not exist (write one with kdasr.distill.specialists.save_subsets, or give subsets: {{from_archive: DIR, num_subsets: K}})")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, Mapping) or "subsets" not in doc:
        raise ValueError(f"{path}: expected a mapping with key 'subsets'")
    out = []
    for s in doc["subsets"]:
        ids = []
        for t in s:
            if isinstance(t, int):
                ids.append(t)
            elif str(t) in tokenizer.token_to_id:
                ids.append(tokenizer.token_to_id[str(t)])
            else:
                raise ValueError(f"{path}: token {t!r} is not in the token set {tokenizer.lang_dir}")
        out.append(ids)
    return validate_subsets(out, tokenizer.vocab_size, tokenizer.blank_id)


def resolve_subsets(model_cfg: Mapping[str, Any], lang_dir: Pathlike, out_dir: Optional[Pathlike] = None) -> dict:
    """``model_cfg`` with ``subsets`` resolved to token ids.

    ``subsets`` may be a YAML path of token symbols, or
    ``{from_archive: DIR, num_subsets: K[, overlap: N, seed: S]}``: the
    generalist's soft-label archive clustered here (written to
    ``out_dir/specialist_subsets.yaml`` for inspection), so a recipe needs no
    extra stage between the generalist and the specialists. The trainer stores
    the model section in every checkpoint; inlining the ids keeps a checkpoint
    self-contained (no file to find at decode time).
    """
    cfg = dict(model_cfg)
    spec = cfg.get("subsets")
    if isinstance(spec, (str, Path)):
        cfg["subsets"] = load_subsets(spec, Tokenizer.from_dir(lang_dir))
    elif isinstance(spec, Mapping):
        if "from_archive" not in spec or "num_subsets" not in spec:
            raise ValueError(f"model.subsets as a mapping needs from_archive and num_subsets, got {dict(spec)}")
        tok = Tokenizer.from_dir(lang_dir)
        seed = int(spec.get("seed", 0))
        subsets = cluster_tokens(posteriors_from_archive(spec["from_archive"], seed=seed), int(spec["num_subsets"]),
                                 tok.blank_id, int(spec.get("overlap", 0)), seed)
        if out_dir is not None:
            save_subsets(subsets, Path(out_dir) / "specialist_subsets.yaml", tok.tokens)
        logging.info("specialist subsets from %s: sizes %s", spec["from_archive"], [len(s) for s in subsets])
        cfg["subsets"] = [list(map(int, s)) for s in subsets]
    return cfg


# --------------------------------------------------------------------------- training


class SpecialistObjective:
    """Per-head CTC for the ``specialists`` model: each head on the transcript mapped into its classes.

    A specialist learns to spell its own tokens and to mark every other
    token with a dustbin spike at the same place (:func:`map_targets`),
    which is what the authors' heads learn and what makes the heads'
    frames combinable. The loss is the mean over heads (the generalist
    head, when present, is one more head trained on the full transcript),
    so the learning rate does not have to change with the number of heads.
    The subsets are read from the model (``model.subsets``, through a DDP
    wrapper too), so objective and heads cannot disagree.
    """

    def __init__(self, blank_id: int = 0, reduction: str = "utterance") -> None:
        self.blank_id = blank_id
        self.reduction = reduction

    def __call__(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        subsets = getattr(model, "module", model).subsets
        heads, generalist, lens = model(batch["features"], batch["feature_lens"], return_heads=True)
        stats: dict = {}
        losses = []
        for i, (h, s) in enumerate(zip(heads, subsets)):
            loss = ctc_loss_hard(h, lens, map_targets(batch["targets"], s), self.blank_id, self.reduction)
            stats[f"ctc_head{i}"] = loss.detach()
            losses.append(loss)
        if generalist is not None:
            loss = ctc_loss_hard(generalist, lens, batch["targets"], self.blank_id, self.reduction)
            stats["ctc_generalist"] = loss.detach()
            losses.append(loss)
        return torch.stack(losses).mean(), stats

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
