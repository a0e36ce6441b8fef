"""Checks that cuts keep the manifest contract, and CTC feasibility of transcripts.

Nothing here drops a cut silently: every check returns a report that lists
each offending cut id under a reason, with counts, so a user can see what a
stage left out and why. A report is a plain dict (JSON/YAML friendly)::

    {"total": 120, "counts": {"empty_text": 2}, "ids": {"empty_text": ["a", "b"]},
     "details": {"empty_text": {}}}

``filter_ctc_feasible`` adds ``"kept"``.
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence, Union

import numpy as np
import soundfile
from lhotse import CutSet, load_manifest, validate, validate_recordings_and_supervisions
from lhotse.utils import compute_num_frames

from kdasr.data.errors import DataError
from kdasr.utils.io import Pathlike

__all__ = [
    "DataError",
    "non_finite_samples",
    "non_finite_in_file",
    "new_report",
    "add_problem",
    "num_problems",
    "format_report",
    "cut_text",
    "validate_cuts",
    "ctc_feasible",
    "cut_num_frames",
    "filter_ctc_feasible",
    "validate_manifest_dir",
]

# Reasons used in reports (keys of report["ids"]).
LHOTSE = "lhotse_validation"
NUM_SUPERVISIONS = "not_one_supervision"
NOT_COVERING = "supervision_not_covering_cut"
EMPTY_TEXT = "empty_text"
DUPLICATE_ID = "duplicate_id"
UNMAPPABLE = "unmappable_text"
INFEASIBLE = "ctc_infeasible"
MANIFESTS = "recordings_supervisions"
NON_FINITE = "non_finite_audio"


class _Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def new_report(total: int = 0) -> dict:
    """An empty report; ``total`` is the number of items checked."""
    return {"total": total, "counts": {}, "ids": {}, "details": {}}


def add_problem(report: dict, reason: str, item_id: str, detail: Optional[str] = None) -> None:
    """Record that ``item_id`` failed check ``reason`` (with an optional message)."""
    report["ids"].setdefault(reason, []).append(item_id)
    report["counts"][reason] = report["counts"].get(reason, 0) + 1
    details = report["details"].setdefault(reason, {})
    if detail is not None:
        details[item_id] = detail


def num_problems(report: dict) -> int:
    """Total number of (reason, id) problems in a report."""
    return sum(report["counts"].values())


def format_report(report: dict, max_ids: int = 5, title: str = "") -> str:
    """Human-readable summary: counts by reason and the first ``max_ids`` ids of each."""
    head = f"{title}: " if title else ""
    kept = f", kept {report['kept']}" if "kept" in report else ""
    n = num_problems(report)
    lines = [f"{head}{report['total']} checked{kept}, {n} problem(s)"]
    for reason in sorted(report["counts"]):
        ids = report["ids"][reason]
        details = report["details"].get(reason, {})
        lines.append(f"  {reason}: {report['counts'][reason]}")
        for item_id in ids[:max_ids]:
            msg = details.get(item_id)
            lines.append(f"    {item_id}" + (f"  ({msg})" if msg else ""))
        if len(ids) > max_ids:
            lines.append(f"    ... and {len(ids) - max_ids} more")
    return "\n".join(lines)


def cut_text(cut: Any) -> str:
    """The transcript of a cut: its supervisions' texts joined by spaces ('' if none)."""
    return " ".join(" ".join((s.text or "").split()) for s in cut.supervisions).strip()


def non_finite_samples(samples: np.ndarray) -> int:
    """How many samples are NaN or Inf (fbank and lilcom would crash on them, far from the cut)."""
    return int(np.count_nonzero(~np.isfinite(samples)))


def non_finite_in_file(source: Union[Pathlike, io.BytesIO]) -> int:
    """NaN/Inf samples of an audio file; only float encodings can hold them, so others are not read
    (nor files libsndfile cannot open: lhotse reads those through codecs that decode to finite values)."""
    try:
        info = soundfile.info(source)
    except soundfile.LibsndfileError:
        return 0
    if info.subtype not in ("FLOAT", "DOUBLE"):
        return 0
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return sum(non_finite_samples(b) for b in soundfile.blocks(source, blocksize=1 << 16, dtype="float32"))


def validate_cuts(cuts: Iterable[Any], read_data: bool = False, tolerance: float = 0.01) -> dict:
    """lhotse's per-cut validation plus the kdasr contract (docs/ARCHITECTURE.md, Cuts).

    Checks: lhotse ``validate`` (times, recording and feature consistency;
    ``read_data`` also loads audio/features), exactly one supervision that
    spans the whole cut (within ``tolerance`` seconds), non-empty text and
    unique cut ids; with ``read_data``, no NaN/Inf audio samples.
    """
    report = new_report()
    seen: set[str] = set()
    reported_dup: set[str] = set()
    total = 0
    for cut in cuts:
        total += 1
        if cut.id in seen:
            if cut.id not in reported_dup:
                add_problem(report, DUPLICATE_ID, cut.id)
                reported_dup.add(cut.id)
        seen.add(cut.id)
        try:
            validate(cut, read_data=read_data)
            bad = non_finite_samples(cut.load_audio()) if read_data and cut.has_recording else 0
            if bad:
                add_problem(report, NON_FINITE, cut.id, f"{bad} NaN/Inf sample(s) in its audio")
        except Exception as e:  # lhotse asserts; a reading failure is a problem of this cut too
            add_problem(report, LHOTSE, cut.id, f"{type(e).__name__}: {e}")
        sups = cut.supervisions
        if len(sups) != 1:
            add_problem(report, NUM_SUPERVISIONS, cut.id, f"{len(sups)} supervisions")
        else:
            sup = sups[0]
            if abs(sup.start) > tolerance or abs(sup.end - cut.duration) > tolerance:
                add_problem(
                    report,
                    NOT_COVERING,
                    cut.id,
                    f"supervision {sup.id} spans {sup.start:.3f}-{sup.end:.3f} s of a {cut.duration:.3f} s cut",
                )
        if not cut_text(cut):
            add_problem(report, EMPTY_TEXT, cut.id)
    report["total"] = total
    return report


def ctc_feasible(num_frames: int, token_ids: Sequence[int], subsampling: int = 4) -> bool:
    """Whether CTC can align ``token_ids`` to ``num_frames`` input frames.

    The model emits ``ceil(T / subsampling)`` frames; CTC needs one frame per
    token plus one blank between each pair of equal adjacent tokens.
    """
    out_frames = -(-max(num_frames, 0) // subsampling)
    repeats = sum(1 for a, b in zip(token_ids, token_ids[1:]) if a == b)
    return out_frames >= len(token_ids) + repeats


def cut_num_frames(cut: Any, frame_shift: float = 0.01) -> int:
    """Feature frames of a cut: stored features if any, else from duration (snip_edges=False)."""
    if cut.has_features and cut.num_frames is not None:
        return int(cut.num_frames)
    return compute_num_frames(cut.duration, frame_shift, cut.sampling_rate)


def _is_unknown_token_error(e: BaseException) -> bool:
    # The tokenizer is duck-typed; recognise its error by class name, not identity.
    return any(cls.__name__ == "UnknownTokenError" for cls in type(e).__mro__)


def filter_ctc_feasible(
    cuts: Iterable[Any],
    tokenizer: _Encoder,
    frame_shift: float = 0.01,
    subsampling: int = 4,
    keep_untranscribed: bool = False,
) -> tuple[CutSet, dict]:
    """Keep the cuts CTC can train on; report the others by id and reason.

    ``keep_untranscribed`` keeps cuts with no text (KD students learn them
    from a teacher's soft labels alone); they are counted in
    ``report["untranscribed"]``, not reported as problems.

    Reasons: ``empty_text``, ``unmappable_text`` (the tokenizer raised
    ``UnknownTokenError``), ``ctc_infeasible`` (too many tokens for the
    subsampled frames). Counts are logged as a warning when anything is dropped.
    """
    report = new_report()
    kept = []
    total = 0
    for cut in cuts:
        total += 1
        text = cut_text(cut)
        if not text and keep_untranscribed:
            report["untranscribed"] = report.get("untranscribed", 0) + 1
            kept.append(cut)
            continue
        if not text:
            add_problem(report, EMPTY_TEXT, cut.id)
            continue
        try:
            ids = tokenizer.encode(text)
        except Exception as e:
            if not _is_unknown_token_error(e):
                raise
            add_problem(report, UNMAPPABLE, cut.id, str(e))
            continue
        if not ids:
            add_problem(report, EMPTY_TEXT, cut.id, f"text {text!r} encodes to no tokens")
            continue
        frames = cut_num_frames(cut, frame_shift)
        if not ctc_feasible(frames, ids, subsampling):
            repeats = sum(1 for a, b in zip(ids, ids[1:]) if a == b)
            add_problem(
                report,
                INFEASIBLE,
                cut.id,
                f"{frames} frames -> {math.ceil(frames / subsampling)} outputs < "
                f"{len(ids)} tokens + {repeats} repeats",
            )
            continue
        kept.append(cut)
    report["total"] = total
    report["kept"] = len(kept)
    dropped = total - len(kept)
    if dropped:
        counts = ", ".join(f"{r}: {n}" for r, n in sorted(report["counts"].items()))
        logging.warning("CTC filter dropped %d of %d cuts (%s)", dropped, total, counts)
    else:
        logging.info("CTC filter kept all %d cuts", total)
    return CutSet.from_cuts(kept), report


def validate_manifest_dir(
    manifest_dir: Pathlike,
    parts: Optional[Sequence[str]] = None,
    tokenizer: Optional[_Encoder] = None,
    read_data: bool = False,
    frame_shift: float = 0.01,
    subsampling: int = 4,
) -> dict[str, dict]:
    """Validate ``cuts_<part>.jsonl.gz`` (and its recordings/supervisions) for each part.

    ``parts`` defaults to every ``cuts_*.jsonl.gz`` in the directory. With a
    tokenizer, CTC-infeasible cuts are reported too. Returns part -> report.
    """
    manifest_dir = Path(manifest_dir)
    if not manifest_dir.is_dir():
        raise DataError(f"manifest directory {manifest_dir} does not exist")
    if not parts:
        parts = sorted(p.name[len("cuts_") : -len(".jsonl.gz")] for p in manifest_dir.glob("cuts_*.jsonl.gz"))
        if not parts:
            raise DataError(f"no cuts_*.jsonl.gz in {manifest_dir}")
    reports: dict[str, dict] = {}
    for part in parts:
        cuts_path = manifest_dir / f"cuts_{part}.jsonl.gz"
        if not cuts_path.is_file():
            raise DataError(f"part {part!r}: {cuts_path} does not exist")
        try:
            cuts = load_manifest(cuts_path)
        except Exception as e:
            raise DataError(f"cannot read {cuts_path}: {e}") from e
        report = validate_cuts(cuts, read_data=read_data)
        rec_path = manifest_dir / f"recordings_{part}.jsonl.gz"
        sup_path = manifest_dir / f"supervisions_{part}.jsonl.gz"
        if rec_path.is_file() and sup_path.is_file():
            try:
                validate_recordings_and_supervisions(load_manifest(rec_path), load_manifest(sup_path))
            except Exception as e:
                add_problem(report, MANIFESTS, f"{rec_path.name}+{sup_path.name}", f"{type(e).__name__}: {e}")
        if tokenizer is not None:
            _, ctc_report = filter_ctc_feasible(cuts, tokenizer, frame_shift, subsampling)
            for reason, ids in ctc_report["ids"].items():
                if reason == EMPTY_TEXT:
                    continue  # already reported by validate_cuts
                for item_id in ids:
                    add_problem(report, reason, item_id, ctc_report["details"][reason].get(item_id))
        reports[part] = report
    return reports
