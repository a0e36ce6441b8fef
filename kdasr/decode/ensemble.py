"""Decoding several models at once as an ensemble: the row a KD student is measured against.

Hinton et al. (2015) distil an ensemble into one model and report how much of
the ensemble's gain over a single model the student keeps. kdasr's results
tables therefore decode the teachers together: every member runs on the same
features, each other member's posteriors are re-timed onto the first
member's spikes (:func:`kdasr.distill.align.align_to_anchor`, along the first
member's best path: at decode time there is no transcript), and the
distributions are averaged frame by frame — the same mean a KD student of
``kd.combine: average`` with ``kd.align_spikes`` learns from. CTC models
trained apart spike on different frames; the plain frame average of their
posteriors would blur every spike into two smaller ones.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from kdasr.distill.align import align_to_anchor
from kdasr.models.checkpoint import load_model


class EnsembleModel(nn.Module):
    """Members' averaged posteriors, returned as log-probs in the Model contract's ``(logits, out_lens)``."""

    name = "ensemble"
    inputs = ("features",)

    def __init__(self, members: Sequence[nn.Module], blank_id: int = 0) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        self.members = nn.ModuleList(members)
        self.blank_id = blank_id
        self.num_features = members[0].num_features
        self.frame_shift = members[0].frame_shift

    def num_params(self) -> int:
        return sum(m.num_params() for m in self.members)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m(feats, feat_lens) for m in self.members]
        lens = outs[0][1]
        probs = [torch.softmax(logits.float(), dim=-1) for logits, _ in outs]
        for i, (_, other_lens) in enumerate(outs[1:], 1):
            if not torch.equal(other_lens, lens):
                raise ValueError(f"ensemble member {i} gives other output lengths than member 0")
        anchor = probs[0].cpu().numpy()
        total = probs[0].clone()
        for p in probs[1:]:
            other = p.cpu().numpy()
            for b, n in enumerate(lens.tolist()):
                aligned = align_to_anchor(anchor[b, :n], other[b, :n], None, self.blank_id)
                total[b, :n] += torch.from_numpy(np.ascontiguousarray(aligned)).to(total.device)
        return torch.log((total / len(probs)).clamp(min=1e-30)), lens


def load_ensemble(paths: Sequence[Path], device: Any, blank_id: int = 0) -> tuple[EnsembleModel, dict]:
    """The ensemble of checkpoints ``paths`` and a checkpoint-like summary (``model_cfg``, ``num_features``,
    ``lang_hash``, ``members``); members must share token set, features and frame rate (named when not)."""
    models, ckpts = zip(*(load_model(p, device) for p in paths))
    first = ckpts[0]
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        for key in ("lang_hash", "vocab_size", "num_features", "sampling_rate"):
            if ckpt.get(key) != first.get(key):
                raise ValueError(f"ensemble: {path} has {key} {ckpt.get(key)!r}, {paths[0]} {first.get(key)!r}")
        if not math.isclose(float(ckpt.get("frame_shift", 0.04)), float(first.get("frame_shift", 0.04))):
            raise ValueError(f"ensemble: {path} has another output frame rate than {paths[0]}")
    model = EnsembleModel(models, blank_id).to(device).eval()
    names = "+".join(c["model_cfg"]["name"] for c in ckpts)
    summary = {"model_cfg": {"name": f"ensemble({names})"}, "num_features": first["num_features"],
               "lang_hash": first["lang_hash"], "vocab_size": first["vocab_size"],
               "members": [str(p) for p in paths]}
    return model, summary
