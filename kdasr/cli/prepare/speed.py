"""``kdasr prepare speed``: add speed-perturbed copies (``<id>_sp0.9``) to a part's source cuts."""
from __future__ import annotations

from pathlib import Path

import click

from kdasr.cli.common import log_to


def _factors(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        return [float(f) for f in value.replace(",", " ").split()]
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a list of numbers, e.g. 0.9,1.0,1.1") from e


@click.command()
@click.option("--manifest-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Holds cuts_<part>.jsonl.gz (rewritten with the copies added).")
@click.option("--part", default="train", show_default=True, help="The part to perturb (training data only).")
@click.option("--factors", default="0.9,1.0,1.1", callback=_factors, show_default=True,
              help="Speed factors; 1.0 keeps the original cut.")
@click.option("--view", type=click.Choice(["wb", "nb"]), default="wb", show_default=True,
              help="nb: a corpus's own 8 kHz cuts (cuts_<part>_nb.jsonl.gz), not made from the wb ones.")
def speed(manifest_dir: Path, part: str, factors: list[float], view: str) -> None:
    """Speed perturbation as precomputed copies, each with its own cut id (as icefall does).

    Run it before `kdasr prepare narrowband` and `fbank`: every copy gets its
    own audio view, features and, from a teacher, its own soft labels, so
    archive KD stays frame-exact. Rerunning it gives the same manifest.
    """
    from kdasr.data.augment import prepare_speed

    log_to(manifest_dir, f"speed_{part}")
    prepare_speed(manifest_dir, part, factors, view)
