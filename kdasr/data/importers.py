"""Corpus importers: Kaldi data dirs, TSV lists, lhotse recipes and Aurora-4 -> kdasr manifests.

Every importer writes, per data part, ``out_dir/{recordings,supervisions,cuts}_<part>.jsonl.gz``
and returns the CutSet(s). Each cut holds exactly one supervision spanning it
(cuts are trimmed to supervisions, so the cut id is the utterance id) and the
text is kept as the corpus spells it, whitespace-normalised.

Bad input (missing or unreadable audio, empty transcript, duplicate id,
sample-rate mismatch, ...) is collected over the whole input first. By default
the import then stops with a :class:`DataError` that names every bad
utterance/file; with ``skip_bad=True`` the bad entries are left out, counted in
a log warning and listed in ``out_dir/import_<part>.skipped.txt``. Manifests
are only written once every part has been built and validated, each file
atomically, so a failed import never leaves a half-written manifest.
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import io
import logging
import random
import re
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

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
from lhotse.audio import info as audio_info
from lhotse.kaldi import load_kaldi_data_dir, load_kaldi_text_mapping
from lhotse.utils import fastcopy

from kdasr.data.errors import DataError
from kdasr.data.validate import format_report, non_finite_in_file, num_problems, validate_cuts
from kdasr.utils.io import NotUtf8Error, Pathlike, atomic_path, read_utf8

__all__ = [
    "DataError",
    "import_kaldi_dir",
    "import_tsv",
    "import_lhotse_recipe",
    "import_aurora4",
    "AURORA4_CONDITION_GROUPS",
    "normalize_wsj_transcript",
]

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
class _Problems:
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


def _settle(problem_sets: Sequence[_Problems], out_dir: Path, skip_bad: bool, max_lines: int = 20) -> None:
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


def _short(e: BaseException, limit: int = 300) -> str:
    """One-line form of an exception (lhotse's audio errors span many lines)."""
    msg = " ".join(str(e).split())
    return (msg[:limit] + "...") if len(msg) > limit else msg


def _audio_error(source: Union[Pathlike, io.BytesIO], e: BaseException) -> str:
    """libsndfile's one-line reason when it also fails, else lhotse's (multi-backend) message."""
    try:
        soundfile.info(source if isinstance(source, io.BytesIO) else str(source))
    except Exception as sf_error:
        return _short(sf_error)
    return _short(e)


def _norm_text(text: Optional[str]) -> str:
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
        raise DataError(f"part {part!r}: lhotse validation failed: {_short(e)}") from e
    cuts = (
        CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        .trim_to_supervisions(keep_overlapping=False)
        .to_eager()
    )
    report = validate_cuts(cuts)
    if num_problems(report):
        raise DataError(format_report(report, title=f"part {part!r}: cuts break the manifest contract"))
    return recordings, supervisions, cuts


def _write_parts(
    out_dir: Path, parts: dict[str, tuple[RecordingSet, SupervisionSet, _Problems]]
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
    rec_id: str, path: Path, where: str, problems: _Problems, sampling_rate: Optional[int]
) -> Optional[Recording]:
    """lhotse Recording of a mono file, or None after recording why it cannot be used."""
    if not path.is_file():
        problems.add(rec_id, MISSING_AUDIO, f"{where}: audio file {path} does not exist")
        return None
    try:
        rec = Recording.from_file(path, recording_id=rec_id)
    except Exception as e:
        problems.add(rec_id, UNREADABLE_AUDIO, f"{where}: cannot read {path}: {_audio_error(path, e)}")
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
class _Item:
    """One utterance = one whole audio file (TSV lists, Aurora-4)."""

    id: str
    path: Path
    text: Optional[str]
    where: str
    speaker: Optional[str] = None
    custom: Optional[dict] = None


def _manifests_from_items(
    items: Iterable[_Item], problems: _Problems, sampling_rate: Optional[int]
) -> tuple[RecordingSet, SupervisionSet]:
    """Recordings and whole-recording supervisions; duplicate ids and bad entries go to ``problems``."""
    groups: dict[str, list[_Item]] = defaultdict(list)
    for item in items:
        groups[item.id].append(item)
    recs, sups = [], []
    for item_id, group in groups.items():
        if len(group) > 1:
            places = "; ".join(f"{g.where} ({g.path})" for g in group)
            problems.add(item_id, DUPLICATE_ID, f"id {item_id} is given {len(group)} times: {places}")
            continue
        item = group[0]
        text = _norm_text(item.text)
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


# ----------------------------------------------------------------- Kaldi


def _read_table(path: Path, problems: _Problems) -> tuple[dict[str, str], dict[str, int]]:
    """A Kaldi ``key rest`` table: (key -> rest, key -> line number); duplicate keys are reported and dropped."""
    lines = read_utf8(path).splitlines()
    mapping: dict[str, str] = {}
    line_of: dict[str, int] = {}
    dups: dict[str, list[int]] = {}
    for n, raw in enumerate(lines, 1):
        fields = raw.strip().split(maxsplit=1)
        if not fields:
            continue
        key = fields[0]
        if key in line_of:
            dups.setdefault(key, [line_of[key]]).append(n)
            continue
        mapping[key] = fields[1] if len(fields) > 1 else ""
        line_of[key] = n
    for key, ns in dups.items():
        problems.add(key, DUPLICATE_ID, f"{path}: id {key} appears on lines {', '.join(map(str, ns))}")
        del mapping[key]
    return mapping, line_of


def _probe_kaldi_entry(value: str) -> tuple[int, int, int]:
    """(sampling rate, samples, NaN/Inf samples) of a wav.scp entry: a file, or a command piping audio to stdout."""
    if value.endswith("|"):
        # The same shell lhotse uses when it later runs the command to load the audio.
        proc = subprocess.run(value[:-1], shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0 or not proc.stdout:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"command exited with status {proc.returncode}" + (f": {err[-1]}" if err else ""))
        try:
            meta = audio_info(io.BytesIO(proc.stdout))
        except Exception as e:
            raise RuntimeError(f"command output is not audio: {_audio_error(io.BytesIO(proc.stdout), e)}") from e
        bad = non_finite_in_file(io.BytesIO(proc.stdout))
    else:
        meta = audio_info(value)
        bad = non_finite_in_file(value)
    return int(meta.samplerate), int(meta.frames), bad


def _write_table(path: Path, rows: Iterable[tuple[str, Any]]) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in rows), encoding="utf-8")


def _kaldi_recordings(
    wav_scp: Path, problems: _Problems, sampling_rate: Optional[int]
) -> tuple[dict[str, str], dict[str, float], dict[str, int], int]:
    """Check and measure every wav.scp entry: (id -> source, id -> seconds, id -> line, rate)."""
    wavs, wav_line = _read_table(wav_scp, problems)
    sources: dict[str, str] = {}
    measured: dict[str, tuple[int, int, int]] = {}
    for rec_id, value in wavs.items():
        where = f"{wav_scp}:{wav_line[rec_id]}: recording {rec_id}"
        if not value:
            problems.add(rec_id, MALFORMED, f"{where}: no audio path or command")
            continue
        if not value.endswith("|"):
            path = Path(value)
            path = path if path.is_absolute() else Path.cwd() / path
            if not path.is_file():
                problems.add(rec_id, MISSING_AUDIO, f"{where}: audio file {path} does not exist")
                continue
            value = str(path)
        try:
            measured[rec_id] = _probe_kaldi_entry(value)
        except Exception as e:
            reason = _short(e) if value.endswith("|") else _audio_error(value, e)
            problems.add(rec_id, UNREADABLE_AUDIO, f"{where}: cannot read {value}: {reason}")
            continue
        sources[rec_id] = value
    if not measured and not problems:
        raise DataError(f"{wav_scp} lists no recordings")
    rates = Counter(sr for sr, _, _ in measured.values())
    rate = sampling_rate or (rates.most_common(1)[0][0] if rates else 16000)
    durations: dict[str, float] = {}
    for rec_id, (sr, n, bad) in measured.items():
        where = f"{wav_scp}:{wav_line[rec_id]}: recording {rec_id}"
        if sr != rate:
            problems.add(rec_id, SAMPLE_RATE, f"{where} is {sr} Hz, expected {rate} Hz")
        elif n == 0:
            problems.add(rec_id, EMPTY_AUDIO, f"{where} holds no samples")
        elif bad:
            problems.add(rec_id, NON_FINITE, f"{where} holds {bad} NaN/Inf sample(s)")
        else:
            durations[rec_id] = n / sr
    return sources, durations, wav_line, rate


def _kaldi_segments(
    segments_path: Path, wav_scp: Path, wav_line: dict[str, int], durations: dict[str, float], problems: _Problems
) -> dict[str, tuple[str, float, float]]:
    """Utterance -> (recording, start, end) from a segments file; bad or orphaned segments are reported."""
    segs, seg_line = _read_table(segments_path, problems)
    utts: dict[str, tuple[str, float, float]] = {}
    for utt, rest in segs.items():
        where = f"{segments_path}:{seg_line[utt]}: utterance {utt}"
        fields = rest.split()
        try:
            if len(fields) != 3:
                raise ValueError
            rec_id, start, end = fields[0], float(fields[1]), float(fields[2])
        except ValueError:
            problems.add(utt, MALFORMED, f"{where}: expected '<utt> <recording> <start> <end>', got {rest!r}")
            continue
        if rec_id not in wav_line:
            problems.add(utt, UNKNOWN_RECORDING, f"{where}: recording {rec_id} is not in {wav_scp}")
            continue
        if rec_id not in durations:
            problems.add(utt, BAD_RECORDING, f"{where}: its recording {rec_id} was rejected")
            continue
        dur = durations[rec_id]
        end = dur if end == -1 else end  # Kaldi: -1 runs to the end of the recording
        if start < 0 or end <= start or end > dur + SEGMENT_END_TOLERANCE:
            problems.add(utt, MALFORMED, f"{where}: segment {start}-{end} s does not fit {rec_id} ({dur:.3f} s)")
            continue
        utts[utt] = (rec_id, start, min(end, dur))
    return utts


def import_kaldi_dir(
    data_dir: Pathlike,
    out_dir: Pathlike,
    part: str,
    sampling_rate: Optional[int] = None,
    skip_bad: bool = False,
    dev_speakers: int = 0,
    dev_part: str = "dev",
    seed: int = 0,
) -> CutSet:
    """Import a Kaldi data dir (wav.scp, text, optional segments, utt2spk, reco2dur, spk2gender, utt2lang).

    ``dev_speakers`` > 0 holds out that many of its speakers (chosen with
    ``seed``) as part ``dev_part``, for corpora that ship no dev list
    (speechocean762): dev WER then measures the training speakers' held-out
    voices, and the official test stays untouched for the final figures.

    Every wav.scp entry is checked before lhotse sees it: files must exist and
    be readable, ``cmd |`` entries must run and produce audio (they run with
    /bin/sh from the current directory, as lhotse will run them when loading).
    Relative file paths are taken from the current directory, as Kaldi does,
    and stored absolute. ``sampling_rate`` defaults to the most common rate.
    Durations come from the audio itself (so piped entries need no
    kaldi_native_io); a ``reco2dur`` that disagrees is reported in the log.
    Utterances without a speaker get their own id as the speaker (Kaldi's
    convention). The checked entries are written to a temporary data dir that
    ``lhotse.kaldi.load_kaldi_data_dir`` then reads.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    wav_scp, text_path, segments_path = data_dir / "wav.scp", data_dir / "text", data_dir / "segments"
    if not wav_scp.is_file():
        raise DataError(f"{data_dir} is not a Kaldi data dir: {wav_scp} does not exist")
    if not text_path.is_file():
        raise DataError(f"{data_dir}: {text_path} does not exist (kdasr needs transcripts)")
    problems = _Problems(part)
    sources, durations, wav_line, rate = _kaldi_recordings(wav_scp, problems, sampling_rate)
    _compare_reco2dur(data_dir / "reco2dur", durations)
    if segments_path.is_file():
        utts = _kaldi_segments(segments_path, wav_scp, wav_line, durations, problems)
    else:
        utts = {rec_id: (rec_id, 0.0, dur) for rec_id, dur in durations.items()}

    texts, _ = _read_table(text_path, problems)
    speakers: dict[str, str] = {}
    if (data_dir / "utt2spk").is_file():
        speakers, _ = _read_table(data_dir / "utt2spk", problems)
    for utt in list(utts):
        if problems.has(utt):  # e.g. a duplicate line in text or utt2spk
            del utts[utt]
        elif not _norm_text(texts.get(utt)):
            what = "no transcript" if utt not in texts else "empty transcript"
            problems.add(utt, EMPTY_TRANSCRIPT, f"{text_path}: {what} for utterance {utt}")
            del utts[utt]
    _settle([problems], out_dir, skip_bad)
    if not utts:
        raise DataError(f"part {part!r}: no usable utterances in {data_dir}")

    with tempfile.TemporaryDirectory(prefix="kdasr_kaldi_") as tmp:
        stage = Path(tmp)
        recs = sorted({rec_id for rec_id, _, _ in utts.values()})
        _write_table(stage / "wav.scp", ((r, sources[r]) for r in recs))
        _write_table(stage / "reco2dur", ((r, repr(durations[r])) for r in recs))
        _write_table(stage / "text", ((u, _norm_text(texts[u])) for u in utts))
        utt2spk = {u: speakers.get(u) or u for u in utts}
        _write_table(stage / "utt2spk", utt2spk.items())
        if segments_path.is_file():
            _write_table(stage / "segments", ((u, f"{r} {s!r} {e!r}") for u, (r, s, e) in utts.items()))
        for name, keys in (("spk2gender", set(utt2spk.values())), ("utt2lang", set(utts))):
            _copy_if_complete(data_dir / name, stage / name, keys)
        try:
            recordings, supervisions, _ = load_kaldi_data_dir(stage, sampling_rate=rate, use_reco2dur=True)
        except Exception as e:
            raise DataError(f"lhotse could not load Kaldi data dir {data_dir}: {_short(e)}") from e
    supervisions = SupervisionSet.from_segments(fastcopy(s, text=_norm_text(s.text)) for s in supervisions)
    parts = {part: (recordings, supervisions, problems)}
    if dev_speakers > 0:
        held = choose_speakers({s.speaker for s in supervisions}, dev_speakers, seed)
        dev_sups = supervisions.filter(lambda s: s.speaker in held)
        dev_recs = {s.recording_id for s in dev_sups}
        parts = {
            part: (recordings.filter(lambda r: r.id not in dev_recs),
                   supervisions.filter(lambda s: s.recording_id not in dev_recs), problems),
            dev_part: (recordings.filter(lambda r: r.id in dev_recs), dev_sups, _Problems(dev_part)),
        }
        logging.info("part %s: speakers %s held out of %s (%d utterances)", dev_part, sorted(held), part, len(dev_sups))
    return _write_parts(out_dir, parts)[part]


def choose_speakers(speakers: Iterable[str], num: int, seed: int) -> set[str]:
    """``num`` of ``speakers`` drawn with ``seed`` (sorted first, so the draw is reproducible)."""
    pool = sorted(set(speakers))
    if num >= len(pool):
        raise ValueError(f"cannot hold out {num} of the {len(pool)} training speakers for dev")
    return set(random.Random(seed).sample(pool, num))


def _compare_reco2dur(path: Path, durations: dict[str, float]) -> None:
    """Log recordings whose reco2dur disagrees with the audio (a stale reco2dur); the audio wins."""
    if not path.is_file():
        return
    given = load_kaldi_text_mapping(path, float_vals=True)
    off = [r for r, d in durations.items() if r in given and abs(given[r] - d) > 0.01]
    if off:
        logging.warning(
            "%s disagrees with the audio for %d recordings (e.g. %s: %.3f s in reco2dur, %.3f s in the audio); "
            "using the audio's durations", path, len(off), off[0], given[off[0]], durations[off[0]],
        )


def _copy_if_complete(src: Path, dst: Path, keys: set[str]) -> None:
    """Copy an optional Kaldi map if it covers every key (lhotse fails on a partial one)."""
    if not src.is_file():
        return
    mapping = load_kaldi_text_mapping(src)
    missing = keys - set(mapping)
    if missing:
        logging.warning("%s lacks %d of %d entries (e.g. %s); not imported", src, len(missing), len(keys), min(missing))
        return
    _write_table(dst, sorted((k, mapping[k]) for k in keys))


# ----------------------------------------------------------------- TSV


_TSV_HEADER_PATH = {"path", "audio_path", "audio", "wav"}
_TSV_HEADER_TEXT = {"text", "transcript", "transcription"}


def import_tsv(
    tsv_path: Pathlike,
    out_dir: Pathlike,
    part: str,
    sampling_rate: Optional[int] = None,
    skip_bad: bool = False,
) -> CutSet:
    """Import a list of ``audio_path<TAB>transcript[<TAB>speaker]`` lines.

    Relative audio paths are taken from the TSV's directory; an optional first
    line ``path<TAB>text<TAB>speaker`` is a header. The utterance id is the
    audio file's name without extension, so names must be unique. With
    ``sampling_rate`` every file must have that rate; without it any rate goes.
    """
    tsv_path, out_dir = Path(tsv_path), Path(out_dir)
    if not tsv_path.is_file():
        raise DataError(f"TSV list {tsv_path} does not exist")
    lines = read_utf8(tsv_path).splitlines()
    problems = _Problems(part)
    items: list[_Item] = []
    first = True
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if first:
            first = False
            head = [f.strip().lower() for f in fields]
            if len(head) > 1 and head[0] in _TSV_HEADER_PATH and head[1] in _TSV_HEADER_TEXT:
                continue
        where = f"{tsv_path}:{n}"
        if len(fields) not in (2, 3) or not fields[0].strip():
            problems.add(where, MALFORMED, f"{where}: expected audio_path<TAB>transcript[<TAB>speaker], got {raw!r}")
            continue
        path = Path(fields[0].strip())
        path = path if path.is_absolute() else tsv_path.parent / path
        speaker = fields[2].strip() if len(fields) == 3 and fields[2].strip() else None
        items.append(_Item(id=path.stem, path=path, text=fields[1], where=where, speaker=speaker))
    if not items and not problems:
        raise DataError(f"{tsv_path} lists no audio files")
    recordings, supervisions = _manifests_from_items(items, problems, sampling_rate)
    _settle([problems], out_dir, skip_bad)
    return _write_parts(out_dir, {part: (recordings, supervisions, problems)})[part]


# ----------------------------------------------------------------- lhotse recipes


def _part_name(keys: Sequence[str], default: str) -> str:
    """File-safe part name from (possibly nested) recipe keys: ('ihm', 'dev') -> 'ihm_dev'."""
    name = "_".join(str(k) for k in keys) or default
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _flatten_recipe_output(result: Any, recipe: str) -> dict[str, tuple[RecordingSet, SupervisionSet]]:
    """Part -> (recordings, supervisions) from a recipe's (possibly nested) dict of manifests."""
    if not isinstance(result, dict):
        raise DataError(f"lhotse recipe {recipe} returned {type(result).__name__}, expected a dict of manifests")
    out: dict[str, tuple[RecordingSet, SupervisionSet]] = {}

    def walk(node: Any, keys: list[str]) -> None:
        if isinstance(node, dict) and any(k in node for k in ("recordings", "audio", "supervisions")):
            recs = node.get("recordings", node.get("audio"))
            sups = node.get("supervisions")
            name = _part_name(keys, recipe)
            if recs is None or sups is None:
                raise DataError(f"lhotse recipe {recipe}, part {name}: recipe gave no recordings or no supervisions")
            out[name] = (recs, sups)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, keys + [str(k)])

    walk(result, [])
    return out


def _check_recipe_part(
    recordings: Iterable[Recording], supervisions: Iterable[SupervisionSegment], problems: _Problems,
    sampling_rate: Optional[int], recipe: str,
) -> tuple[RecordingSet, SupervisionSet]:
    """Our checks on a recipe's manifests: duplicate ids, sample rate, empty text."""
    recs, sups = list(recordings), list(supervisions)
    where = f"lhotse recipe {recipe}, part {problems.part}"
    kept_recs = {}
    for rec_id, n in Counter(r.id for r in recs).items():
        if n > 1:
            problems.add(rec_id, DUPLICATE_ID, f"{where}: recording id {rec_id} appears {n} times")
    for rec in recs:
        if problems.has(rec.id):
            continue
        if sampling_rate is not None and rec.sampling_rate != sampling_rate:
            problems.add(
                rec.id, SAMPLE_RATE, f"{where}: recording {rec.id} is {rec.sampling_rate} Hz, expected {sampling_rate} Hz"
            )
            continue
        src = rec.sources[0]
        if len(rec.sources) == 1 and src.type == "file" and (bad := non_finite_in_file(src.source)):
            problems.add(rec.id, NON_FINITE, f"{where}: recording {rec.id} ({src.source}) holds {bad} NaN/Inf sample(s)")
            continue
        kept_recs[rec.id] = rec
    sup_counts = Counter(s.id for s in sups)
    kept_sups = []
    for sup in sups:
        if sup_counts[sup.id] > 1:
            if not problems.has(sup.id):
                problems.add(sup.id, DUPLICATE_ID, f"{where}: supervision {sup.id} appears {sup_counts[sup.id]} times")
            continue
        text = _norm_text(sup.text)
        if sup.recording_id not in kept_recs:
            if problems.has(sup.recording_id):
                problems.add(sup.id, BAD_RECORDING, f"{where}: utterance {sup.id}: recording {sup.recording_id} rejected")
            continue  # a supervision without recording is dropped by lhotse's fix_manifests as well
        if not text:
            problems.add(sup.id, EMPTY_TRANSCRIPT, f"{where}: empty transcript for utterance {sup.id}")
            continue
        kept_sups.append(fastcopy(sup, text=text))
    return RecordingSet.from_recordings(kept_recs.values()), SupervisionSet.from_segments(kept_sups)


def import_lhotse_recipe(
    name: str,
    corpus_dir: Pathlike,
    out_dir: Pathlike,
    parts: Optional[Sequence[str]] = None,
    sampling_rate: Optional[int] = None,
    skip_bad: bool = False,
    **kwargs: Any,
) -> dict[str, CutSet]:
    """Run ``lhotse.recipes.prepare_<name>`` on a corpus already on disk and write our per-part files.

    Never downloads: only the recipe's ``prepare_`` function runs. Part names
    are the recipe's keys (``train-clean-100`` stays as it is; nested keys are
    joined with ``_``); ``parts`` keeps only those (and is passed on as
    ``dataset_parts`` where the recipe takes it). Extra ``kwargs`` go to the
    recipe. The recipe's own manifest files are not written (or go to a scratch
    dir that is removed). Audio the recipe cannot read stops the import with
    the recipe's error; ``skip_bad`` covers the checks done on its output.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if not corpus_dir.exists():
        raise DataError(f"corpus directory {corpus_dir} does not exist")
    import lhotse.recipes as recipes  # slow import: only when a recipe is used

    fn = getattr(recipes, f"prepare_{name}", None)
    if fn is None:
        known = sorted(n[len("prepare_") :] for n in dir(recipes) if n.startswith("prepare_"))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known recipes: {', '.join(known)}"
        raise ValueError(f"lhotse has no recipe {name!r}{hint}")
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not takes_any]
    if unknown:
        raise ValueError(f"prepare_{name} takes no option(s) {unknown}; it takes {list(params)[1:]}")
    call = dict(kwargs)
    if parts and "dataset_parts" in params and "dataset_parts" not in call:
        call["dataset_parts"] = list(parts)
    with tempfile.TemporaryDirectory(prefix="kdasr_recipe_") as scratch:
        if "output_dir" in params and "output_dir" not in call:
            call["output_dir"] = None if params["output_dir"].default is None else scratch
        logging.info("running lhotse prepare_%s on %s (%s)", name, corpus_dir, call)
        try:
            result = fn(corpus_dir, **call)
        except Exception as e:
            raise DataError(
                f"lhotse recipe prepare_{name} failed on {corpus_dir}: {type(e).__name__}: {_short(e)}"
            ) from e
        # Materialise now: a recipe may return lazy manifests that read from the scratch dir.
        found = {
            part: (list(recs), list(sups)) for part, (recs, sups) in _flatten_recipe_output(result, name).items()
        }
    if parts:
        wanted = {_part_name([p], name): p for p in parts}
        missing = [p for k, p in wanted.items() if k not in found]
        if missing:
            raise DataError(
                f"lhotse recipe {name} gave no part(s) {missing} from {corpus_dir}; it gave {sorted(found) or 'none'}"
            )
        found = {k: v for k, v in found.items() if k in wanted}
    if not found:
        raise DataError(f"lhotse recipe {name} found no data parts in {corpus_dir}")
    checked = {}
    for part, (recs, sups) in found.items():
        problems = _Problems(part)
        checked[part] = (*_check_recipe_part(recs, sups, problems, sampling_rate, name), problems)
    _settle([p for _, _, p in checked.values()], out_dir, skip_bad)
    return _write_parts(out_dir, checked)


# ----------------------------------------------------------------- Aurora-4

AURORA4_SETS = {"train_clean": "train_si84_clean", "train_multi": "train_si84_multi", "test": "test_eval92"}
AURORA4_CONDITION_GROUPS = {
    "01": "A", **{f"{i:02d}": "B" for i in range(2, 8)}, "08": "C", **{f"{i:02d}": "D" for i in range(9, 15)},
}
AURORA4_TRAIN_UTTS = 7138
AURORA4_TEST_UTTS_PER_CONDITION = 330
_RATE_DIR = re.compile(r"^(?:wav)?[_-]?(8|16)(?:k|khz|000|000hz)$", re.IGNORECASE)
_CONDITION_DIR = re.compile(r"^(0[1-9]|1[0-4])$")
_DOT_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[A-Za-z0-9_.-]+)\)\s*$")


def _find_named_dirs(root: Path, name: str, max_depth: int = 3) -> list[Path]:
    """Directories called ``name`` (any case) within ``max_depth`` levels of ``root`` (root included)."""
    found, frontier = [], [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            if d.name.lower() == name.lower():
                found.append(d)
                continue
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir())
            except OSError:
                continue
        frontier = nxt
    return found


def _rate_of(components: Iterable[str]) -> Optional[int]:
    """Sampling rate named by a ``wav16k`` / ``8k`` / ``16kHz`` style directory, if any."""
    for c in components:
        m = _RATE_DIR.match(c)
        if m:
            return int(m.group(1)) * 1000
    return None


def _aurora4_audio(corpus_dir: Path, set_dirs: list[Path], sampling_rate: int) -> list[Path]:
    """Audio files of one set at the requested rate (files under another rate's directory are left out)."""
    files = []
    for d in set_dirs:
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file():
                rate = _rate_of(f.relative_to(corpus_dir).parts[:-1])
                if rate is None or rate == sampling_rate:
                    files.append(f)
    return files


def _aurora4_transcripts(roots: list[Path], utt_ids: set[str]) -> dict[str, str]:
    """Utterance id -> transcript from WSJ ``.dot`` / ``.lsn`` files and ``.txt`` files.

    Precedence: a per-utterance ``<utt>.txt`` over ``.dot`` (the WSJ original)
    over ``.lsn`` over list-form ``.txt`` lines ``<utt> <text>``. Within a kind
    the first file in path order wins; disagreements are logged.
    """
    kinds: dict[str, dict[str, str]] = {"utt_txt": {}, "dot": {}, "lsn": {}, "list_txt": {}}
    conflicts = 0

    def put(kind: str, utt: str, text: str) -> None:
        nonlocal conflicts
        table = kinds[kind]
        if utt in table and table[utt] != text:
            conflicts += 1
        table.setdefault(utt, text)

    for root in roots:
        for f in sorted(root.rglob("*")):
            suffix = f.suffix.lower()
            if suffix not in (".dot", ".lsn", ".txt") or not f.is_file():
                continue
            try:
                content = read_utf8(f)
            except NotUtf8Error as e:
                if suffix == ".txt" and f.stem.lower() not in utt_ids:
                    logging.debug("skipping %s (not UTF-8): %s", f, e)
                    continue
                raise
            if suffix == ".txt" and f.stem.lower() in utt_ids:
                put("utt_txt", f.stem.lower(), _norm_text(content))
                continue
            for line in content.splitlines():
                if suffix in (".dot", ".lsn"):
                    m = _DOT_LINE.match(line.strip())
                    if m:
                        put(suffix[1:], m.group("id").lower(), _norm_text(m.group("text")))
                else:
                    fields = line.strip().split(maxsplit=1)
                    if fields and fields[0].lower() in utt_ids:
                        put("list_txt", fields[0].lower(), _norm_text(fields[1] if len(fields) > 1 else ""))
    if conflicts:
        logging.warning("%d utterances have differing transcripts in files of one kind; the first file wins", conflicts)
    return {**kinds["list_txt"], **kinds["lsn"], **kinds["dot"], **kinds["utt_txt"]}


def import_aurora4(
    corpus_dir: Pathlike,
    out_dir: Pathlike,
    sampling_rate: int = 16000,
    transcript_dir: Optional[Pathlike] = None,
    dev_speakers: int = 0,
    seed: int = 0,
    parts: Optional[Sequence[str]] = None,
    skip_bad: bool = False,
    normalize_text: str = "none",
) -> dict[str, CutSet]:
    """Import Aurora-4 (WSJ0 SI-84 training, eval92 test in 14 conditions) at 16 or 8 kHz.

    Layout (directory names matched case-insensitively, up to 3 levels below
    ``corpus_dir``, so ``corpus_dir`` may be the Aurora-4 root or its parent)::

        <corpus_dir>/[aurora4/]
          train_si84_clean/ ... <spk>/<utt>.wv1      -> part train_clean  (cut id <utt>)
          train_si84_multi/ ... <spk>/<utt>.wv1|.wv2 -> part train_multi  (cut id <utt>_multi)
          test_eval92/ ... 01/ ... 14/ ... <utt>.wv1|.wv2 -> part test    (cut id <utt>_<cond>)

    Audio is found by extension (.wv1 .wv2 .sph .wav .flac, any depth). The
    16/8 kHz copies are told apart by a directory named like ``wav16k``,
    ``16k``, ``16kHz``, ``16000`` (or the 8 kHz forms) at any level, e.g.
    ``wav8k/test_eval92/05/...`` or ``test_eval92/wav8k/05/...``; files under
    no such directory are used if their rate equals ``sampling_rate``. SPHERE
    files must be uncompressed (libsndfile; WSJ's shorten-compressed files need
    sph2pipe first). The test condition is the first ``01``..``14`` directory
    below ``test_eval92``; supervisions carry ``custom`` fields ``condition``
    and ``condition_group`` (A = 01, B = 02-07, C = 08, D = 09-14).

    Transcripts come from ``.dot`` / ``.lsn`` lines ``TEXT (uttid)``, a
    per-utterance ``<uttid>.txt`` or ``.txt`` lines ``uttid TEXT``, searched in
    ``corpus_dir`` and ``transcript_dir`` (e.g. the WSJ0 discs), ids matched
    case-insensitively; ids are lower case. The speaker is the first three
    characters of the utterance id (WSJ convention). ``normalize_text="wsj"``
    cleans the WSJ markup out of the transcripts
    (:func:`normalize_wsj_transcript`); ``"none"`` keeps them as written.

    ``dev_speakers`` > 0 holds out that many training speakers (chosen with
    ``seed``): their multi-condition utterances form part ``dev`` and none of
    their utterances stay in ``train_clean`` / ``train_multi``. The
    ``dev_0330`` set is not imported. ``parts`` limits the output parts.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if sampling_rate not in (16000, 8000):
        raise ValueError(f"Aurora-4 comes at 16000 or 8000 Hz, not {sampling_rate}")
    if normalize_text not in ("none", "wsj"):
        raise ValueError(f"normalize_text must be none or wsj, not {normalize_text!r}")
    if not corpus_dir.is_dir():
        raise DataError(f"Aurora-4 directory {corpus_dir} does not exist")
    known = list(AURORA4_SETS) + ["dev"]
    wanted = list(parts) if parts else known
    bad_parts = [p for p in wanted if p not in known]
    if bad_parts:
        raise ValueError(f"unknown Aurora-4 part(s) {bad_parts}; parts are {known}")
    if "dev" in wanted and dev_speakers <= 0:
        if parts:
            raise ValueError("part 'dev' needs dev_speakers > 0 (it is held out from training by speaker)")
        wanted.remove("dev")

    # Audio files per source set.
    files: dict[str, list[Path]] = {}
    for part, set_name in AURORA4_SETS.items():
        if part not in wanted and not (part.startswith("train") and "dev" in wanted):
            continue
        dirs = _find_named_dirs(corpus_dir, set_name)
        found = _aurora4_audio(corpus_dir, dirs, sampling_rate) if dirs else []
        if not found:
            dir_list = ", ".join(map(str, dirs))
            what = f"no {sampling_rate} Hz audio in {dir_list}" if dirs else f"no {set_name} directory"
            if parts and part in parts:
                raise DataError(f"Aurora-4 part {part}: {what} under {corpus_dir}")
            logging.warning("Aurora-4 part %s: %s under %s; part not imported", part, what, corpus_dir)
            continue
        files[part] = found
    if not files:
        raise DataError(
            f"no Aurora-4 data found under {corpus_dir} (expected train_si84_clean, train_si84_multi, test_eval92)"
        )

    problems = {part: _Problems(part) for part in [*files, "dev"]}
    items: dict[str, list[_Item]] = {}
    for part, paths in files.items():
        items[part] = []
        for f in paths:
            utt = f.stem.lower()
            custom = None
            if part == "test":
                below = f.relative_to(next(d for d in f.parents if d.name.lower() == AURORA4_SETS["test"])).parts[:-1]
                cond = next((c for c in below if _CONDITION_DIR.match(c)), None)
                if cond is None:
                    problems[part].add(str(f), UNKNOWN_CONDITION, f"{f}: no condition directory 01..14 in its path")
                    continue
                custom = {"condition": cond, "condition_group": AURORA4_CONDITION_GROUPS[cond]}
                item_id = f"{utt}_{cond}"
            else:
                item_id = utt if part == "train_clean" else f"{utt}_multi"
            where = f"Aurora-4 {AURORA4_SETS[part]}"
            items[part].append(_Item(id=item_id, path=f, text=None, where=where, speaker=utt[:3], custom=custom))

    roots = [corpus_dir] + ([Path(transcript_dir)] if transcript_dir is not None else [])
    transcripts = _aurora4_transcripts(roots, {f.stem.lower() for paths in files.values() for f in paths})
    for part_items in items.values():
        for item in part_items:
            item.text = transcripts.get(item.path.stem.lower())
            if item.text is not None and normalize_text == "wsj":
                item.text = normalize_wsj_transcript(item.text)

    if "dev" in wanted:
        _hold_out_dev(items, dev_speakers, seed)
    manifests = {}
    for part in wanted:
        if part not in items:
            continue
        recs, sups = _manifests_from_items(items[part], problems[part], sampling_rate)
        manifests[part] = (recs, sups, problems[part])
        _log_aurora4_counts(part, len(items[part]))
    _settle([m[2] for m in manifests.values()], out_dir, skip_bad)
    return _write_parts(out_dir, manifests)


_WSJ_DROP = re.compile(r"^(?:\[[^\]]*\]|~|\.)$")


def normalize_wsj_transcript(text: str) -> str:
    """WSJ ``.dot``/``.lsn`` markup removed, as Kaldi's ``normalize_transcript.pl`` does it.

    Upper case; backslash quoting removed (``\\,COMMA`` -> ``,COMMA``: the
    verbalized punctuation of WSJ is spoken, so it stays a word);
    ``%PERCENT`` -> ``PERCENT``, ``.POINT`` -> ``POINT``; noise and event
    markers (``[loud_breath]``, ``[<door_slam]``, ``[phone_ring/]``), the
    truncation mark ``~`` and the pause mark ``.`` are dropped (Kaldi maps the
    noises to a noise word; a CTC model here has none); ``<word>`` (a verbal
    deletion, still spoken) -> ``word``; ``*word*`` (mispronounced) ->
    ``word``; ``--DASH`` -> ``-DASH``.
    """
    words = []
    for w in text.split():
        w = w.upper().replace("\\", "")
        if w == "%PERCENT":
            w = "PERCENT"
        elif w == ".POINT":
            w = "POINT"
        if _WSJ_DROP.match(w):
            continue
        m = re.match(r"^<([\w']+)>$", w)
        if m:
            w = m.group(1)
        elif len(w) > 2 and w.startswith("*") and w.endswith("*"):
            w = w[1:-1]
        elif w == "--DASH":
            w = "-DASH"
        if w:
            words.append(w)
    return " ".join(words)


def _hold_out_dev(items: dict[str, list[_Item]], dev_speakers: int, seed: int) -> None:
    """Move ``dev_speakers`` training speakers out of both training sets; dev = their multi-condition utterances."""
    train = [p for p in ("train_multi", "train_clean") if p in items]
    if not train:
        raise DataError("Aurora-4 part dev is held out from training, but no training audio was found")
    held = choose_speakers({it.speaker for p in train for it in items[p] if it.speaker}, dev_speakers, seed)
    items["dev"] = [it for it in items[train[0]] if it.speaker in held]
    for p in train:
        items[p] = [it for it in items[p] if it.speaker not in held]
    logging.info("Aurora-4 dev: speakers %s held out of training (%d utterances)", sorted(held), len(items["dev"]))


def _log_aurora4_counts(part: str, n: int) -> None:
    expected = {
        "train_clean": AURORA4_TRAIN_UTTS,
        "train_multi": AURORA4_TRAIN_UTTS,
        "test": AURORA4_TEST_UTTS_PER_CONDITION * len(AURORA4_CONDITION_GROUPS),
    }.get(part)
    if expected is not None and n != expected:
        logging.info("Aurora-4 part %s: %d files (the full corpus has %d; fine for a subset)", part, n, expected)
