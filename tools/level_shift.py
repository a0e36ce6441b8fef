#!/usr/bin/env python3
"""Gain-shifted copies of a test part, to measure what a level mismatch costs a model.

A recording made with another microphone or preamp is a few dB louder or
quieter than the training data. This scales the audio of every cut by each
``--db`` (lhotse ``perturb_volume``, same cut ids) and computes its features
with the recipe's fbank, writing ``<out-dir>/cuts_<name>_gain<db>_<view>.jsonl.gz``
for `kdasr decode --cuts ...`::

    python tools/level_shift.py --cuts data/manifests/cuts_dev.jsonl.gz --db -15 --db 15 --out-dir data/fbank_gain
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from lhotse import CutSet

from kdasr.data.features import NB_MAX_RATE, compute_fbank


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", required=True, type=Path, help="cut manifest with audio (data/manifests/cuts_<part>[_nb].jsonl.gz)")
    p.add_argument("--db", action="append", type=float, required=True, help="gain in dB (repeatable)")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--num-jobs", type=int, default=1)
    args = p.parse_args()
    cuts = CutSet.from_file(args.cuts).to_eager()
    name = re.sub(r"^cuts_|(_nb)?\.jsonl\.gz$", "", args.cuts.name)
    view = "nb" if next(iter(cuts)).sampling_rate <= NB_MAX_RATE else "wb"
    for db in args.db:
        tag = f"{name}_gain{db:+g}_{view}"
        shifted = CutSet.from_cuts(c.perturb_volume(10 ** (db / 20), affix_id=False) for c in cuts)
        out = args.out_dir / f"cuts_{tag}.jsonl.gz"
        compute_fbank(shifted, args.out_dir / tag, out, num_jobs=args.num_jobs)
        print(out)


if __name__ == "__main__":
    main()
