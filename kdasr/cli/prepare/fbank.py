"""``kdasr prepare fbank``: log-mel features of the wb/nb views, global CMVN, frame-sync check."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import log_to


def _csv(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("give at least one name")
    return items


@click.command()
@click.option("--manifest-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Holds cuts_<part>.jsonl.gz (wb) and cuts_<part>_nb.jsonl.gz (nb).")
@click.option("--parts", default="train,dev,test", callback=_csv, help="Comma-separated parts.")
@click.option("--view", "views", default="wb", callback=_csv,
              help="wb (16 kHz source audio), nb (8 kHz view), or wb,nb.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Gets cuts_<part>_<view>.jsonl.gz, <part>_<view>/ and cmvn_<view>.json.")
@click.option("--num-jobs", type=int, default=1, help="Parallel extraction processes.")
@click.option("--num-mel-bins", type=int, default=None,
              help="Mel bins [default: 40 for 8 kHz audio, 80 above].")
@click.option("--cmvn-part", default="train", help="Part whose features give the global CMVN statistics.")
@click.option("--overwrite", is_flag=True, help="Extract again even where outputs exist.")
def fbank(manifest_dir: Path, parts: list[str], views: list[str], out_dir: Path, num_jobs: int,
          num_mel_bins: Optional[int], cmvn_part: str, overwrite: bool) -> None:
    """Compute fbank features (lilcom archives) and CMVN for each part and view.

    Finished parts are skipped, so an interrupted run resumes. When both views
    of a part exist, their frame counts are checked cut by cut.
    """
    from kdasr.data.features import VIEWS, prepare_fbank

    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise click.BadParameter(f"unknown view(s) {', '.join(bad)}; choose from {', '.join(VIEWS)}",
                                 param_hint="--view")
    log_to(out_dir, "fbank")
    prepare_fbank(manifest_dir, out_dir, parts, views, num_jobs, num_mel_bins, cmvn_part, overwrite)
