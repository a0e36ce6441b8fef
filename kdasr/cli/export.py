"""``kdasr export``: a trained checkpoint as an ONNX graph plus a sidecar, or as a sherpa-onnx model directory."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training checkpoint, e.g. exp/cnn_wb/best.pt.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "sherpa-onnx"]), default="onnx",
              help="onnx: one graph + sidecar (--out); sherpa-onnx: a directory sherpa-onnx loads (--out-dir).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="onnx: output file, e.g. exp/cnn_wb/model.onnx; the sidecar goes next to it (model.meta.yaml).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="sherpa-onnx: output directory (model.onnx, model.int8.onnx, tokens.txt, TLG.fst, README.md).")
@click.option("--opset", type=int, default=None, help="ONNX opset version (default: 17).")
@click.option("--check/--no-check", default=True,
              help="Compare onnxruntime with torch on a padded batch; fail (and write nothing) if they differ.")
@click.option("--tolerance", type=float, default=None,
              help="Largest allowed |onnx - torch| of the log-probs (default: 1e-3).")
@click.option("--lang-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Lang dir whose tokens go into the export (default: the checkpoint's data.lang_dir if found).")
@click.option("--sample-rate", type=int, default=None,
              help="Sample rate of the training audio, for checkpoints that do not record it.")
@click.option("--graph-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="sherpa-onnx: a `kdasr graph` dir whose TLG.fst goes into the export (sherpa's ctc_graph).")
@click.option("--int8/--no-int8", default=True, help="sherpa-onnx: also write model.int8.onnx.")
def export(checkpoint: Path, fmt: str, out: Optional[Path], out_dir: Optional[Path], opset: Optional[int],
           check: bool, tolerance: Optional[float], lang_dir: Optional[Path], sample_rate: Optional[int],
           graph_dir: Optional[Path], int8: bool) -> None:
    """Export CHECKPOINT's model with dynamic batch and time axes.

    Inputs features (B,T,F) float32 and feature_lens (B,) int64 (raw fbank:
    CMVN is inside the model); outputs log_probs (B,ceil(T/4),V) and out_lens.
    """
    from kdasr.cli.common import log_to
    from kdasr.export import DEFAULT_OPSET, DEFAULT_TOLERANCE, export_onnx
    from kdasr.export_sherpa import export_sherpa, human_size

    if fmt == "onnx" and (out is None or out_dir is not None or graph_dir is not None):
        raise click.UsageError("--format onnx writes one file: give --out (not --out-dir or --graph-dir)")
    if fmt == "sherpa-onnx" and (out_dir is None or out is not None):
        raise click.UsageError("--format sherpa-onnx writes a directory: give --out-dir (not --out)")
    opts = dict(opset=DEFAULT_OPSET if opset is None else opset, check=check,
                tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance, lang_dir=lang_dir,
                sample_rate=sample_rate)
    if fmt == "sherpa-onnx":
        assert out_dir is not None
        log_to(out_dir.parent, f"export_{out_dir.name}")
        res = export_sherpa(checkpoint, out_dir, graph_dir=graph_dir, int8=int8, **opts)
        click.echo(f"wrote {res.out_dir}: " + ", ".join(f"{f} ({human_size(n)})" for f, n in sorted(res.files.items())))
        click.echo(f"see {res.out_dir / 'README.md'} for the sherpa-onnx invocation "
                   f"(sample_rate={res.features.sampling_rate}, feature_dim={res.features.num_mel_bins})")
        return
    assert out is not None
    log_to(out.parent, "export")
    result = export_onnx(checkpoint, out, **opts)
    click.echo(f"wrote {result.onnx_path} and {result.meta_path}")
    if result.max_abs_diff is not None:
        info = result.meta["check"]
        click.echo(f"check: max |onnx - torch| of log-probs {info['max_abs_diff']:.3g} "
                   f"(tolerance {info['tolerance']:g}, lengths {info['lengths']})")
