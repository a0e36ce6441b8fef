"""``kdasr prepare import {kaldi,tsv,lhotse,aurora4}``: a corpus -> lhotse manifests.

Thin: each command parses options, attaches a log file beside the manifests
and calls one function of :mod:`kdasr.data.importers` (imported lazily so
``kdasr --help`` does not load lhotse).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import click
import yaml

from kdasr.cli.common import log_to, one_line


def _common_options(f: Callable) -> Callable:
    f = click.option(
        "--skip-bad", is_flag=True,
        help="Leave out bad entries (listed in <out-dir>/import_<part>.skipped.txt) instead of stopping.",
    )(f)
    f = click.option(
        "--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data/manifests"),
        help="Where {recordings,supervisions,cuts}_<part>.jsonl.gz go.",
    )(f)
    return f


def _split_csv(value: Optional[str]) -> Optional[list[str]]:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


@click.group("import")
def import_() -> None:
    """Import a corpus into data/manifests/{recordings,supervisions,cuts}_<part>.jsonl.gz."""


@import_.command("kaldi")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--part", required=True, help="Part name of the output files (train, dev, test, ...).")
@click.option("--sampling-rate", type=int, default=None, help="Expected rate; default: the most common one.")
@click.option("--dev-speakers", type=int, default=0, help="Speakers held out of this part as --dev-part (0: none).")
@click.option("--dev-part", default="dev", help="Part name of the held-out speakers.")
@click.option("--seed", type=int, default=0, help="Seed of the dev speaker choice.")
@_common_options
def kaldi(
    data_dir: Path, part: str, sampling_rate: Optional[int], dev_speakers: int, dev_part: str, seed: int,
    out_dir: Path, skip_bad: bool,
) -> None:
    """A Kaldi data dir (wav.scp, text, segments, utt2spk, reco2dur)."""
    from kdasr.data.importers import import_kaldi_dir

    log_to(out_dir, f"import_{part}")
    with one_line(ValueError):  # the importers' bad arguments
        import_kaldi_dir(data_dir, out_dir, part, sampling_rate=sampling_rate, skip_bad=skip_bad,
                         dev_speakers=dev_speakers, dev_part=dev_part, seed=seed)


@import_.command("tsv")
@click.argument("tsv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--part", required=True, help="Part name of the output files (train, dev, test, ...).")
@click.option("--sampling-rate", type=int, default=None, help="Required rate of every file; default: any.")
@_common_options
def tsv(tsv_path: Path, part: str, sampling_rate: Optional[int], out_dir: Path, skip_bad: bool) -> None:
    """A list of audio_path<TAB>transcript[<TAB>speaker] lines (paths relative to the list)."""
    from kdasr.data.importers import import_tsv

    log_to(out_dir, f"import_{part}")
    with one_line(ValueError):  # the importers' bad arguments
        import_tsv(tsv_path, out_dir, part, sampling_rate=sampling_rate, skip_bad=skip_bad)


@import_.command("lhotse")
@click.option("--recipe", required=True, help="lhotse recipe name, e.g. librispeech (runs prepare_<recipe>).")
@click.option("--corpus-dir", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--parts", default=None, help="Comma-separated parts to keep, e.g. train-clean-100,dev-clean.")
@click.option("--sampling-rate", type=int, default=None, help="Required rate of every recording; default: any.")
@click.option(
    "--recipe-opt", "recipe_opts", multiple=True, metavar="KEY=VALUE",
    help="Extra argument of prepare_<recipe> (value parsed as YAML); repeatable.",
)
@_common_options
def lhotse_recipe(
    recipe: str, corpus_dir: Path, parts: Optional[str], sampling_rate: Optional[int],
    recipe_opts: tuple[str, ...], out_dir: Path, skip_bad: bool,
) -> None:
    """Any lhotse recipe on a corpus already on disk (never downloads)."""
    from kdasr.data.importers import import_lhotse_recipe

    kwargs = {}
    for opt in recipe_opts:
        key, sep, raw = opt.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{opt!r} is not KEY=VALUE", param_hint="--recipe-opt")
        kwargs[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    log_to(out_dir, f"import_{recipe}")
    with one_line(ValueError):  # the importers' bad arguments
        import_lhotse_recipe(
            recipe, corpus_dir, out_dir, parts=_split_csv(parts), sampling_rate=sampling_rate,
            skip_bad=skip_bad, **kwargs,
        )


@import_.command("aurora4")
@click.option("--corpus-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sampling-rate", type=click.Choice(["16000", "8000"]), default="16000", help="Which copy to import.")
@click.option(
    "--transcript-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Extra place to look for .dot/.lsn/.txt transcripts (e.g. the WSJ0 discs).",
)
@click.option("--dev-speakers", type=int, default=0, help="Training speakers held out as part 'dev' (0: no dev).")
@click.option("--seed", type=int, default=0, help="Seed of the dev speaker choice.")
@click.option("--parts", default=None, help="Comma-separated subset of train_clean,train_multi,test,dev.")
@click.option(
    "--normalize-text", type=click.Choice(["none", "wsj"]), default="none", show_default=True,
    help="wsj: drop WSJ transcript markup ([noise], <word>, *word*, ~, backslashes) as Kaldi's recipe does.",
)
@_common_options
def aurora4(
    corpus_dir: Path, sampling_rate: str, transcript_dir: Optional[Path], dev_speakers: int, seed: int,
    parts: Optional[str], normalize_text: str, out_dir: Path, skip_bad: bool,
) -> None:
    """Aurora-4 (train_si84_clean, train_si84_multi, test_eval92 01..14) at 16 or 8 kHz."""
    from kdasr.data.importers import import_aurora4

    log_to(out_dir, "import_aurora4")
    with one_line(ValueError):  # the importers' bad arguments
        import_aurora4(
            corpus_dir, out_dir, sampling_rate=int(sampling_rate), transcript_dir=transcript_dir,
            dev_speakers=dev_speakers, seed=seed, parts=_split_csv(parts), skip_bad=skip_bad,
            normalize_text=normalize_text,
        )
