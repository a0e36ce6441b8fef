"""Hold back transcripts to simulate little labelled data (Hinton et al. 2015, section 3).

Which cuts keep their transcript is a pure function of the cut id (its
original id for multistream copies) and a seed, so every run, every view and
every copy of a cut agree, whatever the data order.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable

from lhotse import CutSet
from lhotse.cut import Cut

from kdasr.data.dataset import source_id


def _unit(key: str, seed: int) -> float:
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def keeps_transcript(cut: Cut, fraction: float, seed: int = 0) -> bool:
    """Whether ``cut`` is in the transcribed ``fraction`` of the data."""
    return _unit(source_id(cut), seed) < fraction


def hold_back_transcripts(cuts: Iterable[Cut], fraction: float, seed: int = 0) -> CutSet:
    """The cuts, with the transcripts of all but about ``fraction`` of them emptied."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"transcribed fraction must lie in [0, 1], got {fraction}")

    def drop(cut: Cut) -> Cut:
        if keeps_transcript(cut, fraction, seed):
            return cut
        return cut.map_supervisions(lambda s: dataclasses.replace(s, text=""))

    return CutSet.from_cuts(drop(c) for c in cuts)
