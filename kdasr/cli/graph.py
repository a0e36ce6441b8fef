"""``kdasr graph``: a TLG decoding graph (and the ARPA LM behind it) for a lang dir."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import log_to


@click.command()
@click.option("--lang-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Token set (kdasr prepare tokens); the graph goes to LANG_DIR/graph_<hash>/.")
@click.option("--lm-text", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="LM sentences: cuts (*.jsonl[.gz], their transcripts) or a text file, one sentence a line.")
@click.option("--arpa", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Use this ARPA LM instead of training one on --lm-text.")
@click.option("--order", type=int, default=3, help="N-gram order of the LM trained on --lm-text.")
@click.option("--uniform", is_flag=True, help="Equal-weight word loop over the --lm-text words instead of an n-gram.")
def graph(lang_dir: Path, lm_text: Optional[Path], arpa: Optional[Path], order: int, uniform: bool) -> None:
    """Build (or find cached) TLG.fst, words.txt, lexicon.txt and G.arpa; print the graph dir."""
    from kdasr.decode.graph import build_graph

    if lm_text is None and arpa is None:
        raise click.UsageError("give --lm-text or --arpa")
    if uniform and arpa is not None:
        raise click.UsageError("--uniform builds its own G: drop --arpa")
    log_to(lang_dir, "graph")
    out = build_graph(lang_dir, None if arpa is not None else lm_text, order=order, arpa=arpa, uniform=uniform)
    click.echo(str(out))
