"""``kdasr archive info|check|merge|agreement``: inspect, check against a student, finalize and compare soft-label archives."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import log_to

_ARCHIVE_DIR = click.argument("archive_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))


def _size(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} B"
    size = nbytes / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _load_cuts(path: Path):
    from lhotse import CutSet

    try:
        return CutSet.from_file(path).to_eager()
    except Exception as e:
        raise click.ClickException(f"cannot read cuts {path}: {e}") from e


@click.group()
def archive() -> None:
    """Soft-label archives (`kdasr soft-labels` output): info, check, merge, agreement."""


@archive.command()
@_ARCHIVE_DIR
@click.option("--cuts", "cuts_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Also report how many of these cuts have labels.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
def info(archive_dir: Path, cuts_path: Optional[Path], as_json: bool) -> None:
    """Teacher, storage, temperature, size, bytes per frame and coverage of the archive DIR."""
    from kdasr.distill.archive import archive_info

    cuts = _load_cuts(cuts_path) if cuts_path is not None else None
    d = archive_info(archive_dir, cuts)
    if as_json:
        # NaN (an empty archive's bytes per frame) is not JSON
        out = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
        click.echo(json.dumps(out, indent=2))
        return
    state = "finalized" if d["finalized"] else f"NOT finalized (run: kdasr archive merge {archive_dir})"
    click.echo(f"archive: {d['archive']} ({state})")
    click.echo(f"teacher: {d['teacher']} (checkpoint {d['checkpoint']})")
    click.echo(f"labels: {d['storage']} of {d['vocab_size']} tokens, temperature {d['temperature']:g}, "
               f"view {d['view']}, frame shift {d['frame_shift'] * 1000:g} ms")
    click.echo(f"lang hash: {d['lang_hash']}")
    click.echo(f"cuts: {d['num_cuts']}, frames: {d['total_frames']} ({d['hours']:.2f} h)")
    click.echo(f"size: {_size(d['bytes_on_disk'])} ({d['bytes_on_disk']} bytes), "
               f"{d['bytes_per_frame']:.1f} bytes/frame")
    if "coverage" in d:
        cov = d["coverage"]
        click.echo(f"coverage of {cuts_path}: {cov['covered']} of {cov['cuts']} cuts "
                   f"({100 * cov['fraction']:.1f}%), {cov['missing']} missing")


@archive.command()
@_ARCHIVE_DIR
@click.option("--cuts", "cuts_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The student's training cuts, e.g. data/fbank/cuts_train_nb.jsonl.gz.")
@click.option("--lang-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The student's lang dir: its token set must be the teacher's.")
def check(archive_dir: Path, cuts_path: Path, lang_dir: Optional[Path]) -> None:
    """Check that DIR can teach a student trained on --cuts; exit 1 listing what does not fit.

    Every cut must have labels, with ceil(feature frames / 4) frames, and
    (with --lang-dir) the same token set as the teacher.
    """
    from kdasr.data.tokenizer import Tokenizer
    from kdasr.distill.archive import check_archive

    lang_hash = vocab_size = None
    if lang_dir is not None:
        tok = Tokenizer.from_dir(lang_dir)
        lang_hash, vocab_size = tok.hash, tok.vocab_size
    cuts = _load_cuts(cuts_path)
    problems = check_archive(archive_dir, cuts, lang_hash, vocab_size=vocab_size)
    if problems:
        raise click.ClickException(
            f"soft-label archive {archive_dir} does not fit the student cuts {cuts_path}:\n  - " + "\n  - ".join(problems)
        )
    what = f" and the token set of {lang_dir}" if lang_dir is not None else " (token set not checked: no --lang-dir)"
    click.echo(f"OK: {archive_dir} has labels for all {len(cuts)} cuts of {cuts_path}, frame counts match{what}")


@archive.command()
@_ARCHIVE_DIR
@click.option("--allow-partial", is_flag=True,
              help="Finalize even if jobs of the dump are unfinished (their cuts get no labels).")
def merge(archive_dir: Path, allow_partial: bool) -> None:
    """Finalize DIR after every job of a `kdasr soft-labels --num-jobs N` dump has finished.

    A dump with unfinished jobs (killed, or never run) is refused, naming the
    jobs and cuts, unless --allow-partial.
    """
    from kdasr.distill.archive import merge_jobs

    log_to(archive_dir, "merge")
    cuts = merge_jobs(archive_dir, allow_partial=allow_partial)
    click.echo(f"{archive_dir}: {len(cuts)} cuts merged into {archive_dir / 'cuts.jsonl.gz'}")


@archive.command()
@click.argument("dir_a", metavar="DIR_A", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dir_b", metavar="DIR_B", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-cuts", type=click.IntRange(min=1), default=None,
              help="Compare only the first N common cut ids (sorted) [default: all].")
@click.option("--aligned", is_flag=True,
              help="Also A->B after re-timing B's labels onto A's spikes (what kd.align_spikes does).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of lines.")
def agreement(dir_a: Path, dir_b: Path, max_cuts: Optional[int], aligned: bool, as_json: bool) -> None:
    """Spike agreement of two archives: do the teachers spike on the same frames?

    A->B is the fraction of A's non-blank argmax frames where B's argmax is the
    same token; symmetric is frames where both agree over frames where either
    spikes. Low values mean frame-level KD or averaging across these models
    mixes misaligned spikes: combine with kd.align_spikes, or train one with
    Guided CTC and the other as its guide.
    """
    from kdasr.distill.archive import archive_spike_agreement

    d = archive_spike_agreement(dir_a, dir_b, max_cuts, aligned)
    if as_json:
        click.echo(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}, indent=2))
        return
    click.echo(f"{d['cuts']} cuts, {d['frames']} frames")
    click.echo(f"{d['a']} -> {d['b']}: {d['a_to_b']:.3f}")
    click.echo(f"{d['b']} -> {d['a']}: {d['b_to_a']:.3f}")
    click.echo(f"symmetric: {d['symmetric']:.3f}")
    if aligned:
        click.echo(f"{d['a']} -> {d['b']} re-timed onto {d['a']}: {d['a_to_b_aligned']:.3f}")
