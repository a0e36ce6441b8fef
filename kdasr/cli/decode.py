"""``kdasr decode``: decode a cut set with a checkpoint and score it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import float_list, log_to, one_line
from kdasr.config import parse_override


@click.command()
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Model to decode with; given several times, their ensemble (posteriors averaged after "
                   "re-timing onto the first one's spikes).")
@click.option("--cuts", "cuts_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Cuts with features, e.g. data/fbank/cuts_test_wb.jsonl.gz.")
@click.option("--lang-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--method", default="greedy", help="Search method: greedy, beam or wfst.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="auto", help="auto, cpu or cuda.")
@click.option("--max-duration", default=200.0, help="Seconds of audio per batch.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="Decoder option, e.g. --opt beam=20 --opt graph_dir=data/lang_char/graph_x (repeatable); "
                   "--opt nbest=K (beam, wfst) also writes nbest-*.txt; "
                   "--opt backend=torch|kaldi picks the WFST search (default: torch on cuda, kaldi on cpu).")
@click.option("--name", default=None, help="Test-set name in output files (default: from --cuts).")
@click.option("--num-jobs", default=1, type=click.IntRange(min=1),
              help="WFST search in this many worker processes (same output as 1).")
@click.option("--scan-lm-weights", "scan_weights", default=None, callback=float_list, metavar="W1,W2,...",
              help="Try these LM weights on --scan-cuts and decode CUTS with the best (beam with an LM, wfst).")
@click.option("--scan-cuts", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Dev cuts for --scan-lm-weights.")
def decode(checkpoints: tuple[Path, ...], cuts_path: Path, lang_dir: Path, method: str, out_dir: Path, device: str,
           max_duration: float, opts: tuple[str, ...], name: Optional[str], num_jobs: int,
           scan_weights: Optional[list[float]], scan_cuts: Optional[Path]) -> None:
    """Decode CUTS and write recogs-*, errs-* (with %WER and %CER), wer-summary-* and decode.yaml to OUT_DIR.

    With --scan-lm-weights also lm-weight-scan-*.{yaml,md}; with --opt nbest=K also nbest-*.txt.
    """
    from kdasr.decode.run import run_decode

    log_to(out_dir, "decode")
    decoder_opts = {}
    for item in opts:
        keys, value = parse_override(item)
        decoder_opts[".".join(keys)] = value
    with one_line(ValueError):
        summary = run_decode(list(checkpoints), cuts_path, lang_dir, out_dir, method, device, max_duration, decoder_opts,
                             name, num_jobs=num_jobs, scan_weights=scan_weights, scan_cuts=scan_cuts)
    if "lm_weight" in summary:
        click.echo(f"LM weight {summary['lm_weight']:g} (lowest WER on {scan_cuts}; "
                   f"table: {out_dir / summary['lm_weight_scan']['table']})")
    click.echo(f"%WER {summary['wer']:.2f} [ {summary['errors']} / {summary['ref_words']} ]  %CER {summary['cer']:.2f}  "
               f"RTF {summary['rtf']:.4f}")
