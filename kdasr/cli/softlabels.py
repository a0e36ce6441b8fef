"""``kdasr soft-labels``: dump a teacher's per-frame distributions into a soft-label archive."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import check_job, job_options, log_to, one_line


@click.command("soft-labels")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Teacher checkpoint, e.g. exp/vgg_wb/best.pt.")
@click.option("--cuts", "cuts_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Cuts with features, e.g. data/fbank/cuts_train_wb.jsonl.gz.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Archive directory, e.g. exp/vgg_wb/softlabels/train_wb.")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Store the K most probable tokens per frame plus the remaining mass "
                   "[default: dense up to 64 tokens, else 8].")
@click.option("--dense", is_flag=True, help="Store the whole distribution of every frame.")
@click.option("--compact", is_flag=True,
              help="Compact form: log-probs quantized to uint8 (and uint8 token ids up to 256 tokens), "
                   "20 instead of 50 bytes per frame for the top-8 of 100 tokens.")
@click.option("--logp-range", type=click.FloatRange(min=0, min_open=True, max=80), default=None,
              help="With --compact: log-probs are clipped to [-L, 0] and stored in 255 steps [default: 8].")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0,
              help="Softmax temperature applied to the teacher's logits.")
@click.option("--teacher-name", default=None, help="Teacher name in the archive [default: the checkpoint's exp dir name].")
@click.option("--view", type=click.Choice(["wb", "nb"]), default=None,
              help="View the cuts hold [default: from the cuts file name, else wb].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: cuda when available.")
@click.option("--max-duration", type=click.FloatRange(min=0, min_open=True), default=200.0,
              help="Seconds of (padded) audio per teacher batch.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=200,
              help="Cuts per chunk: a killed job loses at most one chunk and resumes after the last one.")
@job_options
def soft_labels(checkpoint: Path, cuts_path: Path, out_dir: Path, top_k: Optional[int], dense: bool,
                compact: bool, logp_range: Optional[float], temperature: float, teacher_name: Optional[str], view: Optional[str], device: str,
                max_duration: float, chunk_size: int, job: int, num_jobs: int) -> None:
    """Run a teacher over this job's share of CUTS and write its soft labels, keyed by cut id.

    Rerunning a killed job skips the cuts already written. With --num-jobs 1
    the archive is finalized at the end; with more jobs, run
    `kdasr archive merge OUT_DIR` once every job has finished.
    """
    from kdasr.distill.archive import dump_from_checkpoint

    check_job(job, num_jobs)
    if dense and top_k is not None:
        raise click.UsageError("--top-k and --dense exclude each other")
    if logp_range is not None and not compact:
        raise click.UsageError("--logp-range is the scale of --compact; give both or neither")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("no CUDA device is available", param_hint="--device")
    log_to(out_dir, f"softlabels.{job}")
    k = None if dense else (top_k if top_k is not None else "auto")
    with one_line(ValueError):
        stats = dump_from_checkpoint(
            checkpoint, cuts_path, out_dir, k=k, temperature=temperature, quantization="uint8" if compact else None,
            logp_range=logp_range, teacher=teacher_name, view=view,
            device=device, max_duration=max_duration, job=job, num_jobs=num_jobs, chunk_size=chunk_size,
            progress=sys.stderr.isatty(),
        )
    meta = stats["meta"]
    storage = meta.storage
    click.echo(
        f"job {job}/{num_jobs}: teacher {meta.teacher} ({storage} of {meta.vocab_size}, T={meta.temperature:g}): "
        f"{stats['done']} cuts written, {stats['skipped']} already in the archive; "
        f"{stats['audio_seconds']:.1f} s of audio in {stats['wall_seconds']:.1f} s = {stats['xrt']:.1f}x real time"
    )
    if num_jobs > 1:
        click.echo(f"after all {num_jobs} jobs: kdasr archive merge {out_dir}")
