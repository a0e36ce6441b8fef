"""Looking into archives: size and coverage, spike agreement of two teachers, and the checks against a student."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut

from kdasr.data.dataset import source_id
from kdasr.distill.align import align_to_anchor
from kdasr.distill.archive.format import (
    CUTS_FILE,
    META_FILE,
    ArchiveMeta,
    ArchiveMismatchError,
    chunk_manifests,
)
from kdasr.distill.archive.reader import archive_frames, load_archive, load_probs
from kdasr.distill.losses import spike_agreement
from kdasr.models.common import FRAME_SHIFT, SUBSAMPLING, output_lengths
from kdasr.utils.io import Pathlike


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def archive_info(archive_dir: Pathlike, cuts: Optional[Iterable[Cut]] = None) -> dict:
    """Size and coverage of an archive (finalized, or the chunks of a dump still running).

    ``bytes_on_disk`` counts every file under the directory (arrays, both
    kinds of manifests, meta), which is what a disk quota sees.
    """
    archive_dir = Path(archive_dir)
    meta = ArchiveMeta.from_yaml(archive_dir / META_FILE)
    finalized = (archive_dir / CUTS_FILE).is_file()
    if finalized:
        arch = CutSet.from_file(archive_dir / CUTS_FILE)
    else:
        arch = CutSet.from_cuts(c for _, _, p in chunk_manifests(archive_dir) for c in CutSet.from_file(p))
    frames = {c.id: archive_frames(c) for c in arch}
    total = sum(frames.values())
    nbytes = _dir_bytes(archive_dir)
    info: dict = {
        "archive": str(archive_dir),
        "teacher": meta.teacher,
        "checkpoint": meta.checkpoint,
        "lang_hash": meta.lang_hash,
        "storage": meta.storage,
        "k": meta.k,
        "quantization": meta.quantization,
        "logp_range": meta.logp_range,
        "vocab_size": meta.vocab_size,
        "temperature": meta.temperature,
        "frame_shift": meta.frame_shift,
        "view": meta.view,
        "finalized": finalized,
        "num_cuts": len(frames),
        "total_frames": total,
        "hours": total * meta.frame_shift / 3600.0,
        "bytes_on_disk": nbytes,
        "bytes_per_frame": nbytes / total if total else float("nan"),
    }
    if cuts is not None:
        want = {source_id(c) for c in cuts}
        covered = len(want & frames.keys())
        info["coverage"] = {
            "cuts": len(want),
            "covered": covered,
            "missing": len(want) - covered,
            "fraction": covered / len(want) if want else 1.0,
        }
    return info


def archive_spike_agreement(
    dir_a: Pathlike, dir_b: Pathlike, max_cuts: Optional[int] = None, aligned: bool = False
) -> dict:
    """Spike agreement of two teachers' archives on the cuts both hold (see :func:`spike_agreement`).

    Why it matters: frame-level KD and frame-level averaging of teachers
    assume the models spike on the same frames; two independently trained
    CTC models often do not. Reports A→B and B→A (directed: A's spike frames
    where B's argmax is the same token) and the symmetric IoU, over the
    first ``max_cuts`` common cut ids in sorted order (all by default).
    ``aligned`` adds A→B after B's labels are re-timed onto A's spikes (A's
    best path forced-aligned to both, as ``kd.align_spikes`` does with the
    transcript): how much of the disagreement is timing alone.
    """
    meta_a, cuts_a = load_archive(dir_a)
    meta_b, cuts_b = load_archive(dir_b)
    if meta_a.vocab_size != meta_b.vocab_size or meta_a.lang_hash != meta_b.lang_hash:
        raise ArchiveMismatchError(f"{dir_a} and {dir_b} label different token sets: spikes cannot be compared")
    by_id_a, by_id_b = {c.id: c for c in cuts_a}, {c.id: c for c in cuts_b}
    common = sorted(by_id_a.keys() & by_id_b.keys())
    if max_cuts is not None:
        common = common[:max_cuts]
    if not common:
        raise ArchiveMismatchError(f"{dir_a} and {dir_b} have no cut id in common")
    return {"a": meta_a.teacher, "b": meta_b.teacher,
            **cuts_spike_agreement(by_id_a, by_id_b, common, meta_a.vocab_size, aligned, (str(dir_a), str(dir_b)))}


def cuts_spike_agreement(
    cuts_a: Mapping[str, Cut], cuts_b: Mapping[str, Cut], ids: Sequence[str], vocab_size: int,
    aligned: bool = False, where: tuple[str, str] = ("A", "B"),
) -> dict:
    """Spike agreement of two teachers' archive cuts ``{id: cut}`` over ``ids`` (all present in both):
    ``cuts``, ``frames``, ``a_to_b``, ``b_to_a``, ``symmetric`` [, ``a_to_b_aligned``]; ``where`` names
    the two sides in errors."""
    arg_a, arg_b, arg_b_al = [], [], []
    for cid in ids:
        pa, pb = load_probs(cuts_a[cid], vocab_size), load_probs(cuts_b[cid], vocab_size)
        if pa.shape[0] != pb.shape[0]:
            raise ArchiveMismatchError(f"cut {cid}: {pa.shape[0]} frames in {where[0]}, {pb.shape[0]} in {where[1]}")
        arg_a.append(pa.argmax(axis=1))
        arg_b.append(pb.argmax(axis=1))
        if aligned:
            arg_b_al.append(align_to_anchor(pa, pb).argmax(axis=1))

    # One long utterance of argmax one-hots: only the argmax matters to spike_agreement.
    def onehot(args: list[np.ndarray]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.from_numpy(np.concatenate(args)), vocab_size).unsqueeze(0)

    a, b = onehot(arg_a), onehot(arg_b)
    lens = torch.tensor([a.shape[1]])
    out = {
        "cuts": len(ids),
        "frames": int(a.shape[1]),
        "a_to_b": spike_agreement(a, b, lens),
        "b_to_a": spike_agreement(b, a, lens),
        "symmetric": spike_agreement(a, b, lens, symmetric=True),
    }
    if aligned:
        out["a_to_b_aligned"] = spike_agreement(a, onehot(arg_b_al), lens)
    return out


def _fmt_ids(items: list[str], n: int = 5) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_loaded(
    meta: ArchiveMeta,
    archive_frames_by_id: dict[str, int],
    student_cuts: Iterable[Cut],
    lang_hash: Optional[str],
    frame_shift: float = FRAME_SHIFT,
    vocab_size: Optional[int] = None,
    where: str = "archive",
) -> list[str]:
    """:func:`check_archive` on an archive already in memory (``{cut id: frames}``)."""
    problems: list[str] = []
    if lang_hash is not None and meta.lang_hash != lang_hash:
        problems.append(
            f"{where}: token set differs: archive lang hash {meta.lang_hash[:12]}..., student {lang_hash[:12]}... "
            "(teacher and student must use the same data/lang_* directory)"
        )
    if vocab_size is not None and meta.vocab_size != vocab_size:
        problems.append(f"{where}: vocab size {meta.vocab_size}, student {vocab_size}")
    if not math.isclose(meta.frame_shift, frame_shift, rel_tol=1e-6, abs_tol=1e-9):
        problems.append(f"{where}: frame shift {meta.frame_shift} s, student {frame_shift} s")
    missing: list[str] = []
    no_feats: list[str] = []
    bad_frames: list[str] = []
    bad_shift: list[str] = []
    n = 0
    for c in student_cuts:
        n += 1
        key = source_id(c)
        if key not in archive_frames_by_id:
            missing.append(key)
            continue
        if not c.has_features:
            no_feats.append(c.id)
            continue
        fs = c.features.frame_shift * SUBSAMPLING
        if not math.isclose(fs, meta.frame_shift, rel_tol=1e-6, abs_tol=1e-9):
            bad_shift.append(f"{c.id} ({c.features.frame_shift} s x {SUBSAMPLING})")
        want = output_lengths(int(c.num_frames))
        got = archive_frames_by_id[key]
        if got != want:
            bad_frames.append(f"{c.id}: archive {got}, student {want} = ceil({c.num_frames}/{SUBSAMPLING})")
    if missing:
        problems.append(f"{where}: {len(missing)} of {n} student cuts have no soft labels: {_fmt_ids(missing)}")
    if no_feats:
        problems.append(f"{where}: {len(no_feats)} student cuts have no features: {_fmt_ids(no_feats)}")
    if bad_shift:
        problems.append(f"{where}: {len(bad_shift)} student cuts have another output frame shift: {_fmt_ids(bad_shift)}")
    if bad_frames:
        problems.append(
            f"{where}: {len(bad_frames)} cuts have a different number of output frames "
            f"(speed perturbation, other features or a model breaking ceil(T/4)?): {_fmt_ids(bad_frames, 3)}"
        )
    return problems


def check_archive(
    archive_dir: Pathlike,
    student_cuts: Iterable[Cut],
    lang_hash: Optional[str],
    frame_shift: float = FRAME_SHIFT,
    vocab_size: Optional[int] = None,
) -> list[str]:
    """Every reason ``archive_dir`` cannot teach a student trained on ``student_cuts`` (empty: fine).

    Checks: every student cut has labels (by ``orig_id`` when present); per
    cut, archive frames == ``ceil(student feature frames / 4)``; the lang hash
    (and vocab size, if given) matches; the archive's and the student
    features' output frame shift match ``frame_shift``.
    """
    meta, arch = load_archive(archive_dir)
    frames = {c.id: archive_frames(c) for c in arch}
    return check_loaded(meta, frames, student_cuts, lang_hash, frame_shift, vocab_size, where=str(archive_dir))


def ensure_compatible(
    archive_dir: Pathlike,
    student_cuts: Iterable[Cut],
    lang_hash: Optional[str],
    frame_shift: float = FRAME_SHIFT,
    vocab_size: Optional[int] = None,
) -> ArchiveMeta:
    """:func:`check_archive`, raising :class:`ArchiveMismatchError` listing every problem; returns the meta."""
    problems = check_archive(archive_dir, student_cuts, lang_hash, frame_shift, vocab_size)
    if problems:
        raise ArchiveMismatchError(
            f"soft-label archive {archive_dir} does not fit the student:\n  - " + "\n  - ".join(problems)
        )
    return ArchiveMeta.from_yaml(Path(archive_dir) / META_FILE)
