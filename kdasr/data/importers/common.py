"""What every importer shares: problem collection and reports, audio probing, writing the parts."""
from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import soundfile
from lhotse import (
    CutSet,
    Recording,
    RecordingSet,
    SupervisionSegment,
    SupervisionSet,
    fix_manifests,
    validate_recordings_and_supervisions,
)

from kdasr.data.errors import DataError
from kdasr.data.validate import (
    format_report,
    non_finite_in_file,
    num_problems,
    validate_cuts,
)
from kdasr.utils.io import Pathlike, atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".wv1", ".wv2", ".sph")

# Reasons an entry is rejected (second column of import_<part>.skipped.txt).
MISSING_AUDIO = "missing_audio"
UNREADABLE_AUDIO = "unreadable_audio"
EMPTY_AUDIO = "empty_audio"
EMPTY_TRANSCRIPT = "empty_transcript"
DUPLICATE_ID = "duplicate_id"
SAMPLE_RATE = "sample_rate_mismatch"
NOT_MONO = "not_mono"
MALFORMED = "malformed_entry"
UNKNOWN_RECORDING = "unknown_recording"
BAD_RECORDING = "recording_rejected"
UNKNOWN_CONDITION = "unknown_condition"
NON_FINITE = "non_finite_audio"

# A segment may end this much after its recording (rounding in segments files); it is clipped.
SEGMENT_END_TOLERANCE = 0.01


# ----------------------------------------------------------------- problems


@dataclass
class Problems:
    """Bad entries of one part: (key, reason, detail), in input order."""

    part: str
    items: list[tuple[str, str, str]] = field(default_factory=list)
    _keys: set[str] = field(default_factory=set)

    def add(self, key: str, reason: str, detail: str) -> None:
        self.items.append((key, reason, detail))
        self._keys.add(key)

    def has(self, key: str) -> bool:
        return key in self._keys

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r for _, r, _ in self.items).items()))

    def counts_text(self) -> str:
        return ", ".join(f"{r}: {n}" for r, n in self.counts().items())

    def render(self) -> str:
        head = f"# kdasr import, part {self.part}: {len(self.items)} skipped entries (id<TAB>reason<TAB>detail)\n"
        return head + "".join(f"{k}\t{r}\t{d}\n" for k, r, d in self.items)

    def __len__(self) -> int:
        return len(self.items)


def _report_path(out_dir: Path, part: str) -> Path:
    return out_dir / f"import_{part}.skipped.txt"


def settle(problem_sets: Sequence[Problems], out_dir: Path, skip_bad: bool, max_lines: int = 20) -> None:
    """Stop with a DataError naming the bad entries, or (skip_bad) warn and go on without them."""
    bad = [p for p in problem_sets if p.items]
    if not bad:
        return
    if skip_bad:
        for p in bad:
            logging.warning(
                "part %s: skipping %d bad entries (%s); listed in %s",
                p.part, len(p), p.counts_text(), _report_path(out_dir, p.part),
            )
        return
    lines = []
    for p in bad:
        lines.append(f"part {p.part!r}: {len(p)} bad entries ({p.counts_text()}):")
        lines += [f"  {k} [{r}] {d}" for k, r, d in p.items[:max_lines]]
        if len(p) > max_lines:
            lines.append(f"  ... and {len(p) - max_lines} more")
    reports = ", ".join(str(_report_path(out_dir, p.part)) for p in bad)
    lines.append(f"Fix them, or rerun with skip_bad=True (--skip-bad) to leave them out and list them in {reports}")
    raise DataError("\n".join(lines))


def short_error(e: BaseException, limit: int = 300) -> str:
    """One-line form of an exception (lhotse's audio errors span many lines)."""
    msg = " ".join(str(e).split())
    return (msg[:limit] + "...") if len(msg) > limit else msg


def audio_error(source: Union[Pathlike, io.BytesIO], e: BaseException) -> str:
    """libsndfile's one-line reason when it also fails, else lhotse's (multi-backend) message."""
    try:
        soundfile.info(source if isinstance(source, io.BytesIO) else str(source))
    except Exception as sf_error:
        return short_error(sf_error)
    return short_error(e)


def norm_text(text: Optional[str]) -> str:
    return " ".join((text or "").split())


# ----------------------------------------------------------------- writing


def _build_part(
    part: str, recordings: RecordingSet, supervisions: SupervisionSet
) -> tuple[RecordingSet, SupervisionSet, CutSet]:
    """lhotse fix + validation, then one cut per supervision; raises DataError on any contract break."""
    recordings, supervisions = fix_manifests(recordings, supervisions)
    if len(supervisions) == 0:
        raise DataError(f"part {part!r}: no usable utterances left")
    try:
        validate_recordings_and_supervisions(recordings, supervisions)
    except Exception as e:
        raise DataError(f"part {part!r}: lhotse validation failed: {short_error(e)}") from e
    cuts = (
        CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        .trim_to_supervisions(keep_overlapping=False)
        .to_eager()
    )
    report = validate_cuts(cuts)
    if num_problems(report):
        raise DataError(format_report(report, title=f"part {part!r}: cuts break the manifest contract"))
    return recordings, supervisions, cuts


def write_parts(
    out_dir: Path, parts: dict[str, tuple[RecordingSet, SupervisionSet, Problems]]
) -> dict[str, CutSet]:
    """Build every part first (so a failure writes nothing), then write each part's files atomically."""
    built = {part: _build_part(part, recs, sups) for part, (recs, sups, _) in parts.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for part, (recs, sups, cuts) in built.items():
        problems = parts[part][2]
        report = _report_path(out_dir, part)
        with contextlib.ExitStack() as stack:
            # All files of a part are written under temporary names, then renamed together.
            for kind, manifest in (("recordings", recs), ("supervisions", sups), ("cuts", cuts)):
                tmp = stack.enter_context(atomic_path(out_dir / f"{kind}_{part}.jsonl.gz"))
                manifest.to_file(tmp)
            if problems.items:
                stack.enter_context(atomic_path(report)).write_text(problems.render())
        if not problems.items and report.exists():
            report.unlink()  # a stale list from an earlier run would mislead
        logging.info(
            "part %s: %d cuts, %.2f h, %d skipped -> %s/{recordings,supervisions,cuts}_%s.jsonl.gz",
            part, len(cuts), sum(c.duration for c in cuts) / 3600, len(problems), out_dir, part,
        )
        result[part] = cuts
    return result


# ----------------------------------------------------------------- audio


def _recording_from_file(
    rec_id: str, path: Path, where: str, problems: Problems, sampling_rate: Optional[int]
) -> Optional[Recording]:
    """lhotse Recording of a mono file, or None after recording why it cannot be used."""
    if not path.is_file():
        problems.add(rec_id, MISSING_AUDIO, f"{where}: audio file {path} does not exist")
        return None
    try:
        rec = Recording.from_file(path, recording_id=rec_id)
    except Exception as e:
        problems.add(rec_id, UNREADABLE_AUDIO, f"{where}: cannot read {path}: {audio_error(path, e)}")
        return None
    if rec.num_samples == 0:
        problems.add(rec_id, EMPTY_AUDIO, f"{where}: {path} holds no samples")
    elif sampling_rate is not None and rec.sampling_rate != sampling_rate:
        problems.add(rec_id, SAMPLE_RATE, f"{where}: {path} is {rec.sampling_rate} Hz, expected {sampling_rate} Hz")
    elif rec.num_channels != 1:
        problems.add(rec_id, NOT_MONO, f"{where}: {path} has {rec.num_channels} channels, kdasr expects mono")
    elif bad := non_finite_in_file(path):
        problems.add(rec_id, NON_FINITE, f"{where}: {path} holds {bad} NaN/Inf sample(s)")
    else:
        return rec
    return None


@dataclass
class Item:
    """One utterance = one whole audio file (TSV lists, Aurora-4)."""

    id: str
    path: Path
    text: Optional[str]
    where: str
    speaker: Optional[str] = None
    custom: Optional[dict] = None


def manifests_from_items(
    items: Iterable[Item], problems: Problems, sampling_rate: Optional[int]
) -> tuple[RecordingSet, SupervisionSet]:
    """Recordings and whole-recording supervisions; duplicate ids and bad entries go to ``problems``."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.id].append(item)
    recs, sups = [], []
    for item_id, group in groups.items():
        if len(group) > 1:
            places = "; ".join(f"{g.where} ({g.path})" for g in group)
            problems.add(item_id, DUPLICATE_ID, f"id {item_id} is given {len(group)} times: {places}")
            continue
        item = group[0]
        text = norm_text(item.text)
        if not text:
            what = "no transcript" if item.text is None else "empty transcript"
            problems.add(item_id, EMPTY_TRANSCRIPT, f"{item.where}: {what} for {item.path}")
            continue
        rec = _recording_from_file(item_id, item.path, item.where, problems, sampling_rate)
        if rec is None:
            continue
        recs.append(rec)
        sups.append(
            SupervisionSegment(
                id=item_id, recording_id=item_id, start=0.0, duration=rec.duration, channel=0,
                text=text, speaker=item.speaker, custom=item.custom,
            )
        )
    return RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups)


