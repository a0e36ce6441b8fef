"""``kdasr score``: WER of any system's output against Kaldi-style reference text."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import one_line
from kdasr.score.wer import MODES


@click.command()
@click.option("--ref", "ref_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Reference text: 'id word word ...' per line.")
@click.option("--hyp", "hyp_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Hypothesis text in the same format.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="test", help="Test-set name in the output file names.")
@click.option("--setting", default=None, help="Row label in wer-summary (default: the --hyp file name).")
@click.option("--conditions", "conditions_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="'id condition' per line; adds a per-condition WER table.")
@click.option("--mode", type=click.Choice(MODES), default="strict",
              help="Ids on one side only: strict = error, all = missing hyp is empty, present = skip.")
@click.option("--top-n", type=int, default=None, help="Keep the N most frequent errors of each kind (default: all).")
def score(ref_path: Path, hyp_path: Path, out_dir: Path, name: str, setting: Optional[str],
          conditions_path: Optional[Path], mode: str, top_n: Optional[int]) -> None:
    """Write recogs-NAME.txt, errs-NAME.txt and wer-summary-NAME.txt to OUT_DIR and print the %WER line."""
    from kdasr.score.wer import read_conditions_file, score_text_files

    with one_line(ValueError):
        stats = score_text_files(ref_path, hyp_path, out_dir, name, setting, conditions_path, mode, top_n)
    click.echo(stats.wer_line())
    if conditions_path is not None:
        for cond, s in stats.by_condition(read_conditions_file(conditions_path)).items():
            click.echo(f"{cond}\t{s.wer_line()}")
