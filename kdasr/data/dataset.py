"""Batches for CTC training and decoding, built from lhotse cuts with precomputed features.

The sampler yields CutSets; this dataset turns one into tensors. Everything
downstream keys by ``cut_ids`` (never by batch position), so soft-label
lookups survive any change of data order. An online teacher of another view
(a broadband teacher of a narrowband student) gets that view's features of
the same cuts in ``views``, with the same augmentation draws.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset.collation import collate_features
from lhotse.utils import fastcopy

from kdasr.data.augment import Augmenter
from kdasr.data.errors import DataError
from kdasr.data.tokenizer import Tokenizer
from kdasr.data.validate import cut_text


def source_id(cut: Cut) -> str:
    """The id of the cut a training copy was made from (``orig_id``: multistream's copies), else its own id:
    what archives and other views know it by."""
    return str((cut.custom or {}).get("orig_id", cut.id))


class AsrDataset(torch.utils.data.Dataset):
    """Map a CutSet (one sampler batch) to a dict of tensors (see docs/ARCHITECTURE.md, Batch).

    ``views``: other views of the training cuts, ``name -> ({source id: cut}, augmenter)``; the batch then
    holds ``views[name] = (features, feature_lens)`` in the batch's row order (the augmenter is
    ``augment.view(...)``, so both views get the same gain, noise, time warp and masks).
    """

    def __init__(
        self, tokenizer: Tokenizer, augment: Optional[Augmenter] = None,
        views: Optional[Mapping[str, tuple[Mapping[str, Cut], Augmenter]]] = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.augment = augment
        self.views = dict(views or {})
        if self.views and augment is None:
            raise ValueError("other views are augmented like the student's features: give an augmenter")

    def _view_cuts(self, name: str, by_id: Mapping[str, Cut], cuts: CutSet) -> CutSet:
        """The view's copy of each batch cut, under the batch cut's id (which seeds its augmentation)."""
        out = []
        for c in cuts:
            v = by_id.get(source_id(c))
            if v is None:
                raise DataError(f"cut {c.id} has no counterpart in view {name}")
            out.append(fastcopy(v, id=c.id))
        return CutSet.from_cuts(out)

    def __getitem__(self, cuts: CutSet) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        views = {}
        try:
            if self.augment is None:
                features, feature_lens = collate_features(cuts)
            else:
                others = [(aug, self._view_cuts(name, by_id, cuts)) for name, (by_id, aug) in self.views.items()]
                (features, feature_lens), out = self.augment.paired(cuts, others)
                views = dict(zip(self.views, out))
        except DataError:
            raise
        except Exception as e:  # a broken feature file: name the cuts so the user can find it
            raise RuntimeError(f"cannot load features of batch with cuts {[c.id for c in cuts][:8]}: {e}") from e
        texts = [cut_text(c) for c in cuts]
        targets = [self.tokenizer.encode(t) if t else [] for t in texts]
        batch = {
            "features": features,
            "feature_lens": feature_lens,
            "cut_ids": [c.id for c in cuts],
            "texts": texts,
            "targets": targets,
            "cuts": cuts,
        }
        if views:
            batch["views"] = views
        return batch
