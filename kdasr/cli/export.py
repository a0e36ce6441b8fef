"""``kdasr export``: a trained checkpoint as an ONNX graph plus a sidecar for deployment."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training checkpoint, e.g. exp/cnn_wb/best.pt.")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", help="Output format.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file, e.g. exp/cnn_wb/model.onnx; the sidecar goes next to it (model.meta.yaml).")
@click.option("--opset", type=int, default=None, help="ONNX opset version (default: 17).")
@click.option("--check/--no-check", default=True,
              help="Compare onnxruntime with torch on a padded batch; fail (and write nothing) if they differ.")
@click.option("--tolerance", type=float, default=None,
              help="Largest allowed |onnx - torch| of the log-probs (default: 1e-3).")
@click.option("--lang-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Lang dir whose tokens go into the sidecar (default: the checkpoint's data.lang_dir if found).")
def export(checkpoint: Path, fmt: str, out: Path, opset: Optional[int], check: bool,
           tolerance: Optional[float], lang_dir: Optional[Path]) -> None:
    """Export CHECKPOINT's model with dynamic batch and time axes.

    Inputs features (B,T,F) float32 and feature_lens (B,) int64 (raw fbank:
    CMVN is inside the model); outputs log_probs (B,ceil(T/4),V) and out_lens.
    """
    from kdasr.cli.common import log_to
    from kdasr.export import DEFAULT_OPSET, DEFAULT_TOLERANCE, ExportError, export_onnx

    log_to(out.parent, "export")
    try:
        result = export_onnx(
            checkpoint, out,
            opset=DEFAULT_OPSET if opset is None else opset,
            check=check,
            tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
            lang_dir=lang_dir,
        )
    except ExportError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {result.onnx_path} and {result.meta_path}")
    if result.max_abs_diff is not None:
        info = result.meta["check"]
        click.echo(f"check: max |onnx - torch| of log-probs {info['max_abs_diff']:.3g} "
                   f"(tolerance {info['tolerance']:g}, lengths {info['lengths']})")
