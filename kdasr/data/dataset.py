"""Batches for CTC training and decoding, built from lhotse cuts with precomputed features.

The sampler yields CutSets; this dataset turns one into tensors. Everything
downstream keys by ``cut_ids`` (never by batch position), so soft-label
lookups survive any change of data order.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from lhotse import CutSet
from lhotse.dataset import SpecAugment
from lhotse.dataset.collation import collate_features

from kdasr.data.tokenizer import Tokenizer
from kdasr.data.validate import cut_text


class AsrDataset(torch.utils.data.Dataset):
    """Map a CutSet (one sampler batch) to a dict of tensors (see docs/ARCHITECTURE.md, Batch)."""

    def __init__(self, tokenizer: Tokenizer, spec_augment: Optional[SpecAugment] = None, targets: bool = True) -> None:
        """``targets=False`` (decoding): leave the transcripts as text, so a reference the token set
        cannot spell is scored as written instead of stopping the batch."""
        self.tokenizer = tokenizer
        self.spec_augment = spec_augment
        self.targets = targets

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        try:
            features, feature_lens = collate_features(cuts)
        except Exception as e:  # a broken feature file: name the cuts so the user can find it
            raise RuntimeError(f"cannot load features of batch with cuts {[c.id for c in cuts][:8]}: {e}") from e
        if self.spec_augment is not None:
            features = self.spec_augment(features)
        texts = [cut_text(c) for c in cuts]
        targets = [self.tokenizer.encode(t) if t else [] for t in texts] if self.targets else None
        return {
            "features": features,
            "feature_lens": feature_lens,
            "cut_ids": [c.id for c in cuts],
            "texts": texts,
            "targets": targets,
            "cuts": cuts,
        }


def spec_augment_from_config(cfg: Optional[dict]) -> Optional[SpecAugment]:
    """lhotse SpecAugment from a config section; ``None`` or ``enabled: false`` turns it off."""
    if not cfg or not cfg.get("enabled", True):
        return None
    opts = {k: v for k, v in cfg.items() if k != "enabled"}
    logging.debug("SpecAugment: %s", opts)
    return SpecAugment(**opts)
