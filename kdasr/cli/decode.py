"""``kdasr decode``: decode a cut set with a checkpoint and score it."""
from __future__ import annotations

from pathlib import Path

import click

from kdasr.config import parse_override


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cuts", "cuts_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Cuts with features, e.g. data/fbank/cuts_test_wb.jsonl.gz.")
@click.option("--lang-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--method", default="greedy", help="Search method: greedy, beam or wfst.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="auto", help="auto, cpu or cuda.")
@click.option("--max-duration", default=200.0, help="Seconds of audio per batch.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="Decoder option, e.g. --opt beam=20 --opt graph_dir=data/lang_char/graph_x (repeatable).")
@click.option("--name", default=None, help="Test-set name in output files (default: from --cuts).")
def decode(checkpoint: Path, cuts_path: Path, lang_dir: Path, method: str, out_dir: Path, device: str,
           max_duration: float, opts: tuple[str, ...], name: str | None) -> None:
    """Decode CUTS and write recogs-*, errs-* (with %WER) and wer-summary-* to OUT_DIR."""
    from kdasr.cli.common import log_to
    from kdasr.decode.run import run_decode

    log_to(out_dir, "decode")
    decoder_opts = {}
    for item in opts:
        keys, value = parse_override(item)
        decoder_opts[".".join(keys)] = value
    summary = run_decode(checkpoint, cuts_path, lang_dir, out_dir, method, device, max_duration, decoder_opts, name)
    click.echo(f"%WER {summary['wer']:.2f} [ {summary['errors']} / {summary['ref_words']} ]  RTF {summary['rtf']:.4f}")
