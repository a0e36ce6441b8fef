"""A text-only LM corpus for the demo, drawn from the demo corpus's own grammar.

``train.txt`` holds the audio training transcripts plus many more sentences
from :func:`kdasr.data.demo.random_text` (its own random stream); ``dev.txt``
and ``test.txt`` are the audio dev and test transcripts, so perplexities
are measured on what the rescoring sees. A drawn sentence that is a dev or
test transcript is not kept unless it is also an audio training transcript:
the LM then knows nothing about the held-out sets beyond what the n-gram of
``kdasr graph`` (trained on the training transcripts) knows. Without that
exception every fixed command ("WHAT TIME IS IT") would vanish from the LM's
text, since the test set holds each of them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from kdasr.data.demo import PARTS, demo_config, random_text, utterance_spec
from kdasr.utils.io import Pathlike, atomic_write_text

_LM_STREAM = 7  # the demo uses the part index as the second seed word; 7 is no part


def make_demo_lm_corpus(out_dir: Pathlike, num_sentences: int = 20000, size: str = "default", seed: int = 0,
                        num_train: Optional[int] = None, num_dev: Optional[int] = None,
                        num_test: Optional[int] = None) -> dict:
    """Write ``train.txt``, ``dev.txt``, ``test.txt`` and ``stats.yaml`` to ``out_dir``; return the stats.

    ``size``, ``seed`` and the counts are those of the demo corpus (``kdasr
    prepare demo``), whose transcripts are regenerated here from its seeds.
    """
    if num_sentences < 1:
        raise ValueError(f"num_sentences must be at least 1, got {num_sentences}")
    config = demo_config(size, seed, num_train, num_dev, num_test)
    texts = {p: [utterance_spec(seed, p, i).text for i in range(config[f"num_{p}"])] for p in PARTS}
    audio_train = set(texts["train"])
    held_out = (set(texts["dev"]) | set(texts["test"])) - audio_train
    rng = np.random.default_rng([seed, _LM_STREAM])
    drawn, rejected = [], 0
    while len(drawn) < num_sentences:
        text = random_text(rng)
        if text in held_out:
            rejected += 1
        else:
            drawn.append(text)
    out_dir = Path(out_dir)
    train = texts["train"] + drawn
    for name, lines in (("train", train), ("dev", texts["dev"]), ("test", texts["test"])):
        atomic_write_text(out_dir / f"{name}.txt", "".join(line + "\n" for line in lines))
    stats = {
        "demo": config,
        "train_sentences": len(train),
        "train_unique": len(set(train)),
        "audio_train_transcripts": len(texts["train"]),
        "drawn_sentences": len(drawn),
        "rejected_held_out_draws": rejected,
        "dev_sentences": len(texts["dev"]),
        "test_sentences": len(texts["test"]),
        "test_in_train": sum(1 for t in texts["test"] if t in audio_train),
    }
    atomic_write_text(out_dir / "stats.yaml", yaml.safe_dump(stats, sort_keys=False))
    logging.info("demo LM corpus in %s: %d training sentences (%d unique), dev %d, test %d; %d draws rejected as "
                 "held-out transcripts", out_dir, len(train), stats["train_unique"], len(texts["dev"]),
                 len(texts["test"]), rejected)
    return stats
