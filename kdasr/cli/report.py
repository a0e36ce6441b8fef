"""``kdasr report``: one results table (Markdown) and a WER-vs-parameters plot."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("exp_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Markdown file to write.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG of WER vs parameters.")
@click.option("--plot-test", default=None, help="Test set of the plot, e.g. test_wb (default: the first).")
@click.option("--plot-method", default="greedy", help="Decoding method of the plot.")
@click.option("--title", default="Results")
def report(exp_dirs: tuple[Path, ...], out: Path, plot: Path | None, plot_test: str | None,
           plot_method: str, title: str) -> None:
    """Gather every decode under EXP_DIRS into a table (seeds merged) and print it."""
    from kdasr.score.report import write_report

    key = (plot_test, plot_method) if plot_test else None
    click.echo(write_report(list(exp_dirs), out, plot, key, title))
