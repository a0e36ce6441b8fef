"""``kdasr transcribe``: audio files to text with a checkpoint or an exported model."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import one_line
from kdasr.config import parse_override


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["greedy", "beam", "wfst"]), default="greedy", help="Search method.")
@click.option("--graph-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="`kdasr graph` dir for --method wfst (default: the export dir's TLG.fst) or beam.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE", help="Decoder option, e.g. --opt beam=16.")
@click.option("--lang-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Tokens (default: the export dir, or the checkpoint's data.lang_dir).")
@click.option("--sample-rate", type=int, default=None,
              help="The model's audio rate, for checkpoints that do not record it.")
@click.option("--int8", is_flag=True, help="Use model.int8.onnx of an export dir.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines with word start/end times (from the CTC spikes: a word ends after its last token's "
                   "spike) instead of plain text.")
@click.option("--device", default="cpu", help="cpu, cuda or auto (checkpoints only).")
@click.option("--max-duration", default=200.0, help="Seconds of audio per batch.")
@click.option("--num-threads", default=1, help="onnxruntime threads.")
def transcribe(model: Path, audio: tuple[Path, ...], method: str, graph_dir: Optional[Path], opts: tuple[str, ...],
               lang_dir: Optional[Path], sample_rate: Optional[int], int8: bool, as_json: bool, device: str,
               max_duration: float, num_threads: int) -> None:
    """Transcribe AUDIO files (or directories of them) with MODEL.

    MODEL is a checkpoint (.pt), an exported .onnx, or a `kdasr export
    --format sherpa-onnx` directory. Audio in any format lhotse reads (wav,
    flac, ...) is mixed to mono and resampled to the model's rate. Prints
    `FILE<TAB>TEXT` per file (or JSON lines with --json); files that cannot
    be read are named on stderr and the exit status is 1.
    """
    from kdasr.transcribe import expand_inputs, load_acoustic_model
    from kdasr.transcribe import transcribe as run

    decoder_opts = {}
    for item in opts:
        keys, value = parse_override(item)
        decoder_opts[".".join(keys)] = value
    if graph_dir is not None:
        decoder_opts["graph_dir"] = graph_dir
    paths = expand_inputs(audio)
    if not paths:
        raise click.ClickException(f"no audio files in {', '.join(map(str, audio))}")
    with one_line(ValueError):
        loaded = load_acoustic_model(model, lang_dir, sample_rate, device, int8, num_threads)
        results = run(loaded, paths, method, decoder_opts, max_duration, with_times=as_json)
    for t in results:
        if t.error is None:
            click.echo(json.dumps(t.as_dict(), ensure_ascii=False) if as_json else f"{t.path}\t{t.text}")
    failed = [t for t in results if t.error is not None]
    if failed:
        logging.error("%d of %d files could not be transcribed: %s", len(failed), len(results),
                      ", ".join(t.path for t in failed))
        raise SystemExit(1)
