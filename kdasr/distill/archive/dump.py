"""Teacher inference into a soft-label archive (``kdasr soft-labels``), split into jobs that resume."""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from lhotse import CutSet
from lhotse.cut import Cut
from tqdm import tqdm

from kdasr.distill.archive.format import COMPACT_LOGP_RANGE, ArchiveError, ArchiveMeta, ArchiveMismatchError, default_k
from kdasr.distill.archive.writer import SoftLabelWriter, job_split, merge_jobs, record_plan
from kdasr.distill.oracle import dump_inputs
from kdasr.models.checkpoint import experiment_name, load_model
from kdasr.models.common import FRAME_SHIFT, SUBSAMPLING, output_lengths
from kdasr.models.inference import ModelInputs, iter_model_outputs
from kdasr.utils.io import Pathlike


def dump_soft_labels(
    model: torch.nn.Module,
    cuts: Iterable[Cut],
    archive_dir: Pathlike,
    meta: ArchiveMeta,
    batch_size: Optional[int] = None,
    max_duration: Optional[float] = 200.0,
    device: Union[str, torch.device] = "cpu",
    job: int = 1,
    num_jobs: int = 1,
    chunk_size: int = 200,
    progress: bool = True,
    model_inputs: Optional[ModelInputs] = None,
) -> dict:
    """Run ``model`` (Model contract) over this job's share of ``cuts`` and write its soft labels.

    The teacher runs through :func:`kdasr.models.inference.iter_model_outputs`
    (``batch_size``: at most that many cuts a batch); its logits are divided
    by ``meta.temperature`` and log-softmaxed, and only the first
    ``out_lens[i]`` frames are kept, so padding never leaks into a label.
    ``out_lens`` must equal ``ceil(T/4)`` (the Frames contract): a teacher
    that breaks it would write labels no student could align with, so the
    dump stops at the first such cut instead. ``model_inputs(batch_cuts)``
    gives extra keyword inputs of the model (tensors are moved to ``device``),
    e.g. the transcripts an Oracle Teacher reads (kdasr.distill.oracle).

    Cuts already in a finished chunk (of any job) are skipped, so rerunning a
    killed job resumes it. Every job records the whole cut list and the number
    of jobs (:func:`~kdasr.distill.archive.writer.record_plan`), so a merge can
    tell a finished dump from a killed one. With ``num_jobs == 1`` the archive
    is finalized at the end; otherwise call :func:`merge_jobs` after every job
    has finished.
    Returns counts and speed (``xrt``: seconds of audio per second of wall time).
    """
    meta.validate()
    all_cuts = list(cuts)
    mine = job_split(all_cuts, job, num_jobs)
    device = torch.device(device)
    model = model.to(device).eval()
    t0 = time.time()
    stats = {"cuts": len(mine), "done": 0, "skipped": 0, "frames": 0, "audio_seconds": 0.0}
    with SoftLabelWriter(archive_dir, meta, chunk_size=chunk_size, job=job) as writer:
        record_plan(archive_dir, [c.id for c in all_cuts], num_jobs)
        finished = writer.finished_ids()
        todo = [c for c in mine if c.id not in finished]
        stats["skipped"] = len(mine) - len(todo)
        if stats["skipped"]:
            logging.info("job %d/%d: %d of %d cuts already in the archive, skipped", job, num_jobs, stats["skipped"], len(mine))
        bar = tqdm(total=len(todo), desc=f"soft labels {job}/{num_jobs}", unit="cut", disable=not progress)
        todo.sort(key=lambda c: (-c.duration, c.id))  # batches of similar length: little padding
        for out in iter_model_outputs(model, todo, device, max_duration=max_duration, max_cuts=batch_size,
                                      temperature=meta.temperature, model_inputs=model_inputs):
            if out.log_probs.shape[-1] != meta.vocab_size:
                raise ArchiveError(
                    f"teacher {meta.teacher} outputs {out.log_probs.shape[-1]} tokens but the archive says vocab_size "
                    f"{meta.vocab_size} (cuts {out.cut_ids[:4]})"
                )
            logp = out.log_probs.cpu().numpy()
            out_lens = out.lens.cpu().tolist()
            for i, c in enumerate(out.cuts):
                n_in = int(out.feature_lens[i])
                expect = output_lengths(n_in)
                if int(out_lens[i]) != expect or int(out_lens[i]) > logp.shape[1]:
                    raise ArchiveError(
                        f"cut {c.id}: teacher {meta.teacher} gives {out_lens[i]} output frames for {n_in} "
                        f"feature frames, the Frames contract says ceil(T/{SUBSAMPLING}) = {expect}"
                    )
                writer.add(c, logp[i, : out_lens[i]])
                stats["frames"] += int(out_lens[i])
                stats["audio_seconds"] += c.duration
            stats["done"] += len(out.cuts)
            bar.update(len(out.cuts))
        bar.close()
    if num_jobs == 1:
        merge_jobs(archive_dir)
    wall = time.time() - t0
    stats["wall_seconds"] = wall
    stats["xrt"] = stats["audio_seconds"] / wall if wall > 0 else float("inf")
    logging.info(
        "job %d/%d: %d cuts (%.1f s of audio, %d frames) in %.1f s: %.1fx real time",
        job, num_jobs, stats["done"], stats["audio_seconds"], stats["frames"], wall, stats["xrt"],
    )
    return stats


def view_from_cuts_path(cuts_path: Pathlike) -> Optional[str]:
    """``wb``/``nb`` from a ``cuts_<part>_<view>.jsonl.gz`` name (``prepare fbank``'s naming), else None."""
    m = re.search(r"_(wb|nb)\.jsonl(\.gz)?$", Path(cuts_path).name)
    return m.group(1) if m else None


def dump_from_checkpoint(
    checkpoint: Pathlike,
    cuts_path: Pathlike,
    archive_dir: Pathlike,
    k: Union[int, str, None] = "auto",
    temperature: float = 1.0,
    quantization: Optional[str] = None,
    logp_range: Optional[float] = None,
    teacher: Optional[str] = None,
    view: Optional[str] = None,
    device: str = "auto",
    max_duration: Optional[float] = 200.0,
    job: int = 1,
    num_jobs: int = 1,
    chunk_size: int = 200,
    progress: bool = True,
) -> dict:
    """Load a teacher checkpoint and dump its soft labels for job ``job`` of ``num_jobs`` (``kdasr soft-labels``).

    ``k``: an int for top-k, ``None`` for dense, ``"auto"`` for
    :func:`default_k` of the checkpoint's vocabulary. ``quantization="uint8"``
    writes the compact form (``logp_range`` default
    :data:`~kdasr.distill.archive.format.COMPACT_LOGP_RANGE`). The meta records the
    checkpoint path as given, the checkpoint's lang hash, and ``teacher``
    (default: :func:`kdasr.models.checkpoint.experiment_name`) and ``view`` (default:
    from the cuts file name, else ``wb``). Returns :func:`dump_soft_labels`'s
    stats plus ``meta``.
    """
    try:
        model, ckpt = load_model(checkpoint)
    except (FileNotFoundError, RuntimeError, KeyError) as e:
        raise ArchiveError(f"cannot load teacher checkpoint {checkpoint}: {e}") from e
    vocab_size = int(ckpt["vocab_size"])
    if not ckpt.get("lang_hash"):
        raise ArchiveError(f"teacher checkpoint {checkpoint} records no lang_hash: no student could be checked against it")
    if k == "auto":
        k = default_k(vocab_size)
    elif isinstance(k, str):
        raise ValueError(f"k must be an int, None (dense) or 'auto', got {k!r}")
    try:
        cuts = CutSet.from_file(cuts_path).to_eager()
    except Exception as e:
        raise ArchiveError(f"cannot read cuts {cuts_path}: {e}") from e
    first = next(iter(cuts), None)
    if first is not None and first.has_features and first.num_features != ckpt["num_features"]:
        raise ArchiveMismatchError(
            f"cut {first.id} in {cuts_path} has {first.num_features} features per frame but teacher {checkpoint} "
            f"expects {ckpt['num_features']} (wrong view or fbank settings?)"
        )
    meta = ArchiveMeta(
        teacher=teacher or experiment_name(checkpoint),
        checkpoint=str(checkpoint),
        lang_hash=str(ckpt["lang_hash"]),
        vocab_size=vocab_size,
        frame_shift=FRAME_SHIFT,
        temperature=float(temperature),
        k=None if k is None else int(k),
        quantization=quantization,
        logp_range=(COMPACT_LOGP_RANGE if logp_range is None else float(logp_range)) if quantization else logp_range,
        view=view or view_from_cuts_path(cuts_path) or "wb",
    )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    stats = dump_soft_labels(model, cuts, archive_dir, meta, max_duration=max_duration, device=device,
                             job=job, num_jobs=num_jobs, chunk_size=chunk_size, progress=progress,
                             model_inputs=dump_inputs(ckpt))  # the Oracle Teacher also reads the transcript
    stats["meta"] = meta
    return stats
