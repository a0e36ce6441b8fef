"""``kdasr prepare narrowband``: the 8 kHz telephone-channel view of every cut, same ids."""
from __future__ import annotations

from pathlib import Path

import click

from kdasr.cli.common import log_to
from kdasr.cli.prepare.fbank import _csv


@click.command()
@click.option("--manifest-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Holds cuts_<part>.jsonl.gz; gets cuts_<part>_nb.jsonl.gz.")
@click.option("--parts", default="train,dev,test", callback=_csv, show_default=True, help="Comma-separated parts.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Gets <part>/<cut_id>.flac at 8 kHz.")
@click.option("--mu-law/--no-mu-law", default=False, show_default=True, help="Add G.711 mu-law companding.")
@click.option("--num-jobs", type=int, default=1, show_default=True, help="Parallel processes.")
def narrowband(manifest_dir: Path, parts: list[str], out_dir: Path, mu_law: bool, num_jobs: int) -> None:
    """Pass every cut through a telephone channel: 8 kHz, 300-3400 Hz band-pass, optional mu-law.

    Cut ids, durations and supervisions are kept, so a broadband teacher's
    soft labels address the narrowband student's cuts; `kdasr prepare fbank
    --view wb,nb` then checks both views have equal frame counts.
    """
    from kdasr.data.telephone import prepare_narrowband

    log_to(out_dir, "narrowband")
    prepare_narrowband(manifest_dir, parts, out_dir, mu_law, num_jobs)
