"""``kdasr prepare demo-lm``: a text-only LM corpus from the demo grammar."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import log_to, one_line


@click.command("demo-lm")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Gets train.txt, dev.txt, test.txt (one sentence a line) and stats.yaml.")
@click.option("--num-sentences", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Sentences drawn from the grammar, on top of the audio training transcripts.")
@click.option("--size", type=click.Choice(["tiny", "small", "default"]), default="default", show_default=True,
              help="The demo corpus size whose dev/test transcripts are held out (as `kdasr prepare demo`).")
@click.option("--seed", type=int, default=0, show_default=True, help="The demo corpus seed.")
@click.option("--num-train", type=int, default=None, help="As `kdasr prepare demo --num-train`.")
@click.option("--num-dev", type=int, default=None, help="As `kdasr prepare demo --num-dev`.")
@click.option("--num-test", type=int, default=None, help="As `kdasr prepare demo --num-test`.")
def demo_lm(out_dir: Path, num_sentences: int, size: str, seed: int, num_train: Optional[int],
            num_dev: Optional[int], num_test: Optional[int]) -> None:
    """Write the demo's LM text: training transcripts plus grammar sentences; dev/test = the audio transcripts.

    No drawn sentence is a dev or test transcript that the audio training
    transcripts (and so the n-gram) lack.
    """
    from kdasr.lm.demo_text import make_demo_lm_corpus

    log_to(out_dir, "demo_lm")
    with one_line(ValueError):
        make_demo_lm_corpus(out_dir, num_sentences, size, seed, num_train, num_dev, num_test)
