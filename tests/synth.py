"""Synthetic cuts with precomputed features that encode their transcript.

Each character has a random prototype feature vector; an utterance is the
prototypes of its characters, each held for a few frames, plus noise. A model
can learn it in a few steps, which is all the training tests need; the real
speech path is covered by the demo-corpus tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from lhotse import CutSet, MonoCut, NumpyFilesWriter, SupervisionSegment
from lhotse.features.base import Features

WORDS = ["ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "ON", "OFF"]


def make_feature_cuts(out_dir: Path, num_cuts: int = 24, num_features: int = 20, seed: int = 0,
                      prefix: str = "utt", nan_cuts: tuple[int, ...] = ()) -> CutSet:
    """``num_cuts`` cuts; the features of the cuts indexed by ``nan_cuts`` hold a NaN."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(1234).normal(size=(128, num_features)).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    cuts = []
    with NumpyFilesWriter(out_dir / f"{prefix}_feats") as writer:
        for i in range(num_cuts):
            text = " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))
            frames = []
            for ch in text:
                frames += [protos[ord(ch)]] * int(rng.integers(6, 10))
            feats = np.stack(frames) + 0.3 * rng.normal(size=(len(frames), num_features)).astype(np.float32)
            if i in nan_cuts:
                feats[len(feats) // 2, 0] = np.nan
            cid = f"{prefix}-{i:03d}"
            dur = round(len(frames) * 0.01, 2)
            cut = MonoCut(id=cid, start=0, duration=dur, channel=0,
                          supervisions=[SupervisionSegment(id=cid, recording_id=cid, start=0, duration=dur, text=text)])
            key = writer.write(cid, feats)
            cut.features = Features(
                type="synthetic", num_frames=len(frames), num_features=num_features, frame_shift=0.01,
                sampling_rate=16000, start=0, duration=dur, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=key,
            )
            cuts.append(cut)
    return CutSet.from_cuts(cuts)
