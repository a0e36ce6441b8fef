"""``kdasr prepare demo``: synthesize the embedded espeak-ng demo corpus."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import log_to, one_line


@click.command()
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Gets audio/<part>/*.flac, manifests/cuts_<part>.jsonl.gz, lexicon.txt, stats.yaml.")
@click.option("--size", type=click.Choice(["tiny", "small", "default"]), default="default", show_default=True,
              help="Number of utterances per part (tiny is for CI).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same audio, byte for byte.")
@click.option("--num-jobs", type=int, default=2, show_default=True, help="Parallel synthesis processes.")
@click.option("--num-train", type=int, default=None, help="Override the size's training utterance count.")
@click.option("--num-dev", type=int, default=None, help="Override the size's dev utterance count.")
@click.option("--num-test", type=int, default=None, help="Override the size's test utterance count.")
def demo(out_dir: Path, size: str, seed: int, num_jobs: int, num_train: Optional[int],
         num_dev: Optional[int], num_test: Optional[int]) -> None:
    """Build the demo corpus: digits and spoken commands by held-out espeak-ng voices in noise.

    Train, dev and test use disjoint voices; dev and test add an unseen 0 dB
    condition. A killed build resumes by rendering only missing files; a
    finished one is reused.
    """
    from kdasr.data.demo import make_demo_corpus

    log_to(out_dir, "demo")
    with one_line(ValueError):
        make_demo_corpus(out_dir, size, seed, num_jobs, num_train, num_dev, num_test)
